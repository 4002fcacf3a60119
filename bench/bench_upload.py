"""Large artifact upload: 200 MB PUT through the streaming proxy vs straight to MLflow, proxy RSS.

One local stack, one 200 MiB file of random bytes, uploaded from the open file (Content-Length,
streamed by ``requests``) to ``.../mlflow-artifacts/artifacts/bench/<uuid>.bin``. Two comparisons,
each against a baseline taken in the same run:

1. End to end, real MLflow: direct PUT to MLflow vs PUT through the proxy with the key. MLflow
   3.x's server runs Flask under Starlette's ``WSGIMiddleware``, which buffers the whole request
   body with ``body += chunk`` (quadratic in the number of chunks), so a 200 MiB upload takes
   a minute or more on two cores whatever the proxy does; so two uploads per side (best of 2).
2. The proxy alone: a second API-service process (same code, same auth service and key) whose
   upstream is a discard sink (reads the body, answers ``{}``), vs the same PUT straight to the
   sink; best of 3 each. This is the proxy's own streaming cost.

A thread polls ``VmRSS`` of the API-service process under test every 50 ms (peak per phase);
``VmHWM`` is read before and after. The MLflow worker's RSS is sampled too (it holds the body).
The end-to-end proxy upload is downloaded back through the proxy and its sha256 compared.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socketserver
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from _common import (
    TRACKER,
    RssSampler,
    api_service_pid,
    fmt,
    load1,
    new_result,
    proc_status_kb,
    target,
)

NAME = "upload"
TARGET_RATIO = 1.20
TARGET_RSS_GROWTH_MB = 30.0
_ART = "/api/2.0/mlflow-artifacts/artifacts/bench/"
_TIMEOUT = (10.0, 600.0)
_CHUNK = 1 << 20


# -- data -----------------------------------------------------------------------------------------
def _make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            chunk = os.urandom(min(_CHUNK, left))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _put(session: Any, url: str, path: Path) -> float:
    with open(path, "rb") as fh:
        start = time.perf_counter()
        resp = session.put(url, data=fh, timeout=_TIMEOUT)
        elapsed = time.perf_counter() - start
    if resp.status_code != 200:
        raise RuntimeError(f"PUT {url} -> HTTP {resp.status_code}: {resp.text[:200]}")
    return elapsed


def _download_sha256(session: Any, url: str) -> tuple[str, int, float]:
    digest = hashlib.sha256()
    size = 0
    start = time.perf_counter()
    with session.get(url, stream=True, timeout=_TIMEOUT) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"GET {url} -> HTTP {resp.status_code}")
        for chunk in resp.iter_content(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, time.perf_counter() - start


# -- discard sink -----------------------------------------------------------------------------------
class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: ClassVar[list[int]] = []

    def do_PUT(self) -> None:
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                left = size
                while left:
                    left -= len(self.rfile.read(min(left, _CHUNK)))
                total += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left > 0:
                data = self.rfile.read(min(left, _CHUNK))
                if not data:
                    break
                left -= len(data)
                total += len(data)
        self.received.append(total)
        self._empty_json()

    def do_GET(self) -> None:
        self._empty_json()

    def _empty_json(self) -> None:
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Sink(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def _start_proxy_to(stack: Any, upstream: str) -> Any:
    """A second API-service process (the stack's own code and auth service) proxying to ``upstream``."""
    from pytest_hokusai.stack.config import (
        CONFIG_ENV,
        STACK_TOKEN_HEADER,
        ApiServiceConfig,
        dump_service_config,
    )
    from pytest_hokusai.stack.process import ManagedProcess, free_port, http_ok, minimal_env
    from pytest_hokusai.stack.serve import PARENT_PID_ENV

    port = free_port()
    config = ApiServiceConfig(auth_url=stack.auth_url, mlflow_url=upstream, admin_token=stack.admin_token,
                              port=port, unreachable_url=f"http://127.0.0.1:{free_port()}",
                              upstream_timeout=120.0)
    env = minimal_env({CONFIG_ENV: dump_service_config(config), PARENT_PID_ENV: str(os.getpid())})
    proc = ManagedProcess("API service (sink upstream)", [sys.executable, "-m", "pytest_hokusai.stack.serve"],
                          log_path=stack.data_dir / "logs" / "api-sink.log", env=env, cwd=stack.data_dir)
    proc.start()
    TRACKER.add([proc.pid])
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(lambda: http_ok(url + "/_stack/faults", headers={STACK_TOKEN_HEADER: stack.admin_token}),
                        deadline_s=60.0)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def _mlflow_worker_pid(stack: Any) -> int | None:
    """The MLflow server's uvicorn worker (the process that receives and buffers request bodies): the
    direct entry itself (stack/mlflow_entry.py), or the CLI's ``python -m uvicorn`` child."""
    for proc in getattr(stack, "_processes", ()):
        if getattr(proc, "name", "") == "MLflow":
            for pid in proc.pids():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmdline = fh.read()
                        if b"uvicorn" in cmdline or b"mlflow_entry.py" in cmdline:
                            return int(pid)
                except OSError:
                    continue
    return None


# -- benchmark --------------------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    import requests

    from pytest_hokusai.stack import start_stack

    size_mb, e2e_reps, sink_reps = (20, 1, 1) if quick else (200, 2, 3)
    size = size_mb * 1024 * 1024
    mb = float(size_mb)
    result = new_result(NAME, f"Large upload ({size_mb} MiB artifact PUT, proxy vs direct) and proxy RSS")
    result["method"] = [
        (f"{size_mb} MiB of random bytes, `PUT .../mlflow-artifacts/artifacts/bench/<uuid>.bin` from an open "
         "file (Content-Length, streamed by requests); auth cache and connections warmed with 256 KiB PUTs."),
        (f"End to end (real MLflow): {e2e_reps} upload(s) per side, alternating (D,P then P,D), best of each. "
         "MLflow's server buffers the whole body quadratically (Starlette `WSGIMiddleware`, `body += chunk`), "
         "which dominates the time and makes more repetitions too slow."),
        (f"Proxy alone: a second API-service process (same code, auth service and key) whose upstream is a "
         f"discard sink in the benchmark process; proxy->sink vs direct->sink, {sink_reps} each, alternating "
         "order, best of each compared."),
        ("RSS: VmRSS of the API-service pid under test polled every 50 ms (peak per phase), VmHWM before "
         "and after; the MLflow worker's RSS sampled alongside. Growth = peak - RSS before the uploads."),
        "Check: the end-to-end proxy upload downloaded back through the proxy; size and sha256 compared.",
    ]
    e2e: dict[str, list[float]] = {"proxy": [], "direct": []}
    sink_t: dict[str, list[float]] = {"proxy": [], "direct": []}
    loads = [load1()]
    sink = _Sink(("127.0.0.1", 0), _SinkHandler)
    sink_thread = threading.Thread(target=sink.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    sink_thread.start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
            blob = Path(tmp) / "blob.bin"
            want_sha = _make_file(blob, size)
            small = Path(tmp) / "small.bin"
            small.write_bytes(os.urandom(256 * 1024))
            with start_stack() as stack:
                TRACKER.add(stack.pids())
                pid = api_service_pid(stack)
                mlflow_pid = _mlflow_worker_pid(stack)
                key = stack.mint_key(scopes=("read", "write"), name="bench upload key")
                with requests.Session() as sp, requests.Session() as sd:
                    sp.trust_env = sd.trust_env = False
                    sp.headers["Authorization"] = "Bearer " + key.reveal()
                    # -- 1. end to end through real MLflow
                    for _ in range(3):
                        _put(sp, stack.tracking_uri + _ART + "warm.bin", small)
                        _put(sd, stack.mlflow_url + _ART + "warm.bin", small)
                    time.sleep(0.5)
                    rss_before = proc_status_kb(pid, "VmRSS") or 0
                    hwm_before = proc_status_kb(pid, "VmHWM") or 0
                    mlflow_before = proc_status_kb(mlflow_pid, "VmRSS") or 0 if mlflow_pid else 0
                    sampler = RssSampler(pid)
                    mlflow_sampler = RssSampler(mlflow_pid) if mlflow_pid else None
                    last_proxy_name = ""
                    with sampler:
                        if mlflow_sampler:
                            mlflow_sampler.__enter__()
                        try:
                            for r in range(e2e_reps):
                                sides = [("direct", sd, stack.mlflow_url), ("proxy", sp, stack.tracking_uri)]
                                if r % 2:
                                    sides.reverse()
                                for label, session, base in sides:
                                    name = f"{uuid.uuid4().hex}.bin"
                                    sampler.phase = f"upload-{label}"
                                    if mlflow_sampler:
                                        mlflow_sampler.phase = f"upload-{label}"
                                    e2e[label].append(_put(session, base + _ART + name, blob))
                                    sampler.phase = "idle"
                                    loads.append(load1())
                                    if label == "proxy" and not last_proxy_name:
                                        last_proxy_name = name
                                    else:  # free the disk; MLflow deletes artifacts on DELETE
                                        sd.delete(stack.mlflow_url + _ART + name, timeout=_TIMEOUT)
                        finally:
                            if mlflow_sampler:
                                mlflow_sampler.__exit__(None, None, None)
                        time.sleep(0.3)
                        sampler.phase = "download-proxy"
                        got_sha, got_size, dl_s = _download_sha256(sp, stack.tracking_uri + _ART + last_proxy_name)
                        sampler.phase = "idle"
                        time.sleep(0.3)
                    rss_after = proc_status_kb(pid, "VmRSS") or 0
                    hwm_after = proc_status_kb(pid, "VmHWM") or 0
                    sd.delete(stack.mlflow_url + _ART + last_proxy_name, timeout=_TIMEOUT)

                    # -- 2. the proxy alone, discard sink upstream
                    sink_proc, sink_proxy_url = _start_proxy_to(stack, sink_url)
                    try:
                        spid = int(sink_proc.pid)
                        for _ in range(3):
                            _put(sp, sink_proxy_url + "/api/mlflow" + _ART + "warm.bin", small)
                            _put(sd, sink_url + _ART + "warm.bin", small)
                        time.sleep(0.3)
                        s_before = proc_status_kb(spid, "VmRSS") or 0
                        s_hwm_before = proc_status_kb(spid, "VmHWM") or 0
                        s_sampler = RssSampler(spid)
                        with s_sampler:
                            for r in range(sink_reps):
                                sides = [("direct", sd, sink_url), ("proxy", sp, sink_proxy_url + "/api/mlflow")]
                                if r % 2:
                                    sides.reverse()
                                for label, session, base in sides:
                                    s_sampler.phase = f"upload-{label}"
                                    sink_t[label].append(_put(session, base + _ART + "x.bin", blob))
                                    s_sampler.phase = "idle"
                                    loads.append(load1())
                        s_hwm_after = proc_status_kb(spid, "VmHWM") or 0
                    finally:
                        sink_proc.stop()
    finally:
        sink.shutdown()
        sink.server_close()
        sink_thread.join(timeout=5)
    if any(n != size for n in _SinkHandler.received[-2 * sink_reps:]):
        raise RuntimeError(f"the sink received {(_SinkHandler.received)} bytes, expected {size} each")

    ratio = min(e2e["proxy"]) / min(e2e["direct"])
    s_ratio = min(sink_t["proxy"]) / min(sink_t["direct"])
    peak = max([rss_before, *sampler.peak_kb.values()])
    growth_mb = (peak - rss_before) / 1024.0
    s_peak = max([s_before, *s_sampler.peak_kb.values()])
    s_growth_mb = (s_peak - s_before) / 1024.0
    verified = got_sha == want_sha and got_size == size
    mlflow_peaks = dict(mlflow_sampler.peak_kb) if mlflow_sampler else {}
    result["metrics"] = {
        "size_bytes": size, "e2e_s": e2e, "sink_s": sink_t, "ratio_e2e": ratio, "ratio_sink": s_ratio,
        "rss_kb": {"before": rss_before, "after": rss_after, "peak_by_phase": dict(sampler.peak_kb),
                   "hwm_before": hwm_before, "hwm_after": hwm_after},
        "sink_proxy_rss_kb": {"before": s_before, "peak_by_phase": dict(s_sampler.peak_kb),
                              "hwm_before": s_hwm_before, "hwm_after": s_hwm_after},
        "mlflow_worker_rss_kb": {"before": mlflow_before, "peak_by_phase": mlflow_peaks},
        "download_s": dl_s, "sha256_ok": verified, "load1_during": [min(loads), max(loads)],
    }

    def row(label: str, times: list[float]) -> list[str]:
        return [label, ", ".join(fmt(t) for t in times), fmt(min(times)), fmt(mb / min(times), 1)]

    result["tables"].append({
        "title": "Upload times",
        "columns": ["path", "runs (s)", "best (s)", "best MiB/s"],
        "rows": [row("end to end: proxy -> MLflow", e2e["proxy"]), row("end to end: direct MLflow", e2e["direct"]),
                 row("proxy alone: proxy -> sink", sink_t["proxy"]), row("proxy alone: direct -> sink",
                                                                          sink_t["direct"])],
    })

    def mib(kb: int | None) -> str:
        return fmt((kb or 0) / 1024, 1)

    result["tables"].append({
        "title": "RSS (MiB)",
        "columns": ["process", "before", "peak while proxy uploads", "peak while direct uploads",
                    "peak while proxy downloads", "VmHWM before -> after"],
        "rows": [
            ["API service (stack proxy)", mib(rss_before), mib(sampler.peak_kb.get("upload-proxy")),
             mib(sampler.peak_kb.get("upload-direct")), mib(sampler.peak_kb.get("download-proxy")),
             f"{mib(hwm_before)} -> {mib(hwm_after)}"],
            ["API service (sink upstream)", mib(s_before), mib(s_sampler.peak_kb.get("upload-proxy")),
             mib(s_sampler.peak_kb.get("upload-direct")), "-", f"{mib(s_hwm_before)} -> {mib(s_hwm_after)}"],
            ["MLflow worker (for scale)", mib(mlflow_before), mib(mlflow_peaks.get("upload-proxy")),
             mib(mlflow_peaks.get("upload-direct")), "-", "-"],
        ],
    })
    result["targets"].append(target(
        "end to end: proxy upload time / direct (real MLflow)", f"<= {TARGET_RATIO:.2f} (within 20 %)",
        f"{ratio:.3f} ({fmt(min(e2e['proxy']), 1)} s vs {fmt(min(e2e['direct']), 1)} s)", ratio <= TARGET_RATIO,
    ))
    result["targets"].append(target(
        "proxy alone: best proxy->sink / best direct->sink (info: the baseline is a no-op sink)", "-",
        f"{s_ratio:.2f} ({fmt(min(sink_t['proxy']))} s vs {fmt(min(sink_t['direct']))} s; proxy "
        f"{fmt(mb / min(sink_t['proxy']), 0)} MiB/s)", None,
    ))
    result["targets"].append(target(
        "proxy RSS growth, end to end (peak VmRSS - before)", f"< {TARGET_RSS_GROWTH_MB:.0f} MB",
        f"{growth_mb:.1f} MiB (VmHWM +{(hwm_after - hwm_before) / 1024:.1f} MiB)",
        growth_mb < TARGET_RSS_GROWTH_MB,
    ))
    result["targets"].append(target(
        "proxy RSS growth, proxy alone", f"< {TARGET_RSS_GROWTH_MB:.0f} MB",
        f"{s_growth_mb:.1f} MiB (VmHWM +{(s_hwm_after - s_hwm_before) / 1024:.1f} MiB)",
        s_growth_mb < TARGET_RSS_GROWTH_MB,
    ))
    result["targets"].append(target(
        "download through proxy: size + sha256 match", "equal",
        "equal" if verified else f"MISMATCH (size {got_size} vs {size})", verified,
    ))
    mlflow_peak = max(mlflow_peaks.values(), default=0)
    if mlflow_peak:
        result["notes"].append(
            f"MLflow's worker grew from {mib(mlflow_before)} to {mib(mlflow_peak)} MiB during a {size_mb} MiB "
            f"upload (it holds the whole body, more than once) and ingested at {fmt(mb / min(e2e['direct']), 1)} "
            f"MiB/s direct: the end-to-end time is MLflow's, the proxy alone streams at "
            f"{fmt(mb / min(sink_t['proxy']), 0)} MiB/s with flat memory."
        )
    result["notes"].append(
        f"Download of the {size_mb} MiB artifact back through the proxy: {fmt(dl_s)} s "
        f"({fmt(mb / dl_s, 1)} MiB/s). 1-min load during the uploads: {min(loads):.2f} .. {max(loads):.2f}."
    )
    return result
