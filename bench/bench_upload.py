"""Large artifact upload: 200 MB PUT through the streaming proxy vs straight to MLflow, proxy RSS.

One local stack, one 200 MB file of random bytes (Content-Length upload from the open file, the
way ``requests`` streams a file). Uploads alternate direct / proxy (order swapped each round);
the best time of each side is compared. A thread polls ``VmRSS`` of the API-service (proxy)
process every 50 ms; ``VmHWM`` (the kernel's peak RSS) is read before and after. One proxy
upload is verified by downloading it through the proxy and comparing sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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
_TIMEOUT = (10.0, 300.0)
_CHUNK = 1 << 20


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


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    import requests

    from pytest_hokusai.stack import start_stack

    size_mb, reps = (20, 1) if quick else (200, 3)
    size = size_mb * 1024 * 1024
    result = new_result(NAME, f"Large upload ({size_mb} MB artifact PUT, proxy vs direct) and proxy RSS")
    result["method"] = [
        (f"{size_mb} MiB of random bytes, `PUT .../mlflow-artifacts/artifacts/bench/<uuid>.bin` from an open "
        "file (Content-Length, streamed by requests), through the proxy with the key and direct to MLflow."),
        f"{reps} upload(s) per side, alternating direct/proxy (order swapped each round); best of each compared.",
        "Proxy RSS: VmRSS of the API-service pid polled every 50 ms (peak per phase), VmHWM before/after.",
        "Check: the last proxy upload downloaded through the proxy and its sha256 compared.",
    ]
    times: dict[str, list[float]] = {"proxy": [], "direct": []}
    loads = [load1()]
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
        blob = Path(tmp) / "blob.bin"
        want_sha = _make_file(blob, size)
        with start_stack() as stack:
            TRACKER.add(stack.pids())
            pid = api_service_pid(stack)
            key = stack.mint_key(scopes=("read", "write"), name="bench upload key")
            with requests.Session() as sp, requests.Session() as sd:
                sp.trust_env = sd.trust_env = False
                sp.headers["Authorization"] = "Bearer " + key.reveal()
                # warm-up: auth cache, code paths, connection pools on both sides
                small = Path(tmp) / "small.bin"
                small.write_bytes(os.urandom(256 * 1024))
                for _ in range(3):
                    _put(sp, stack.tracking_uri + _ART + "warm.bin", small)
                    _put(sd, stack.mlflow_url + _ART + "warm.bin", small)
                time.sleep(0.5)
                rss_before = proc_status_kb(pid, "VmRSS") or 0
                hwm_before = proc_status_kb(pid, "VmHWM") or 0
                last_proxy_name = ""
                sampler = RssSampler(pid)
                with sampler:
                    for r in range(reps):
                        sides = [("direct", sd, stack.mlflow_url), ("proxy", sp, stack.tracking_uri)]
                        if r % 2:
                            sides.reverse()
                        for label, session, base in sides:
                            name = f"{uuid.uuid4().hex}.bin"
                            sampler.phase = f"upload-{label}"
                            times[label].append(_put(session, base + _ART + name, blob))
                            sampler.phase = "idle"
                            loads.append(load1())
                            if label == "proxy" and r == reps - 1:
                                last_proxy_name = name
                            else:  # free the disk; MLflow deletes artifacts on DELETE
                                sd.delete(stack.mlflow_url + _ART + name, timeout=_TIMEOUT)
                    time.sleep(0.3)
                    rss_after_upload = proc_status_kb(pid, "VmRSS") or 0
                    sampler.phase = "download-proxy"
                    got_sha, got_size, dl_s = _download_sha256(sp, stack.tracking_uri + _ART + last_proxy_name)
                    sampler.phase = "idle"
                    time.sleep(0.3)
                rss_after = proc_status_kb(pid, "VmRSS") or 0
                hwm_after = proc_status_kb(pid, "VmHWM") or 0
                sd.delete(stack.mlflow_url + _ART + last_proxy_name, timeout=_TIMEOUT)
    best_p, best_d = min(times["proxy"]), min(times["direct"])
    ratio = best_p / best_d
    upload_peak = max(sampler.peak_kb.get("upload-proxy", 0), sampler.peak_kb.get("upload-direct", 0))
    peak_all = max([upload_peak, *sampler.peak_kb.values(), rss_before])
    growth_mb = (peak_all - rss_before) / 1024.0
    hwm_growth_mb = (hwm_after - hwm_before) / 1024.0
    verified = got_sha == want_sha and got_size == size
    mb = size / (1024 * 1024)
    result["metrics"] = {
        "size_bytes": size, "proxy_s": times["proxy"], "direct_s": times["direct"], "ratio_best": ratio,
        "rss_kb": {"before": rss_before, "after_upload": rss_after_upload, "after": rss_after,
                   "peak_by_phase": dict(sampler.peak_kb), "hwm_before": hwm_before, "hwm_after": hwm_after},
        "rss_samples": sampler.samples, "download_s": dl_s, "sha256_ok": verified,
    }
    result["tables"].append({
        "title": "Upload times",
        "columns": ["path", "runs (s)", "best (s)", "best MiB/s"],
        "rows": [[label, ", ".join(fmt(t) for t in times[key_]), fmt(min(times[key_])),
                  fmt(mb / min(times[key_]), 1)]
                 for label, key_ in (("proxy", "proxy"), ("direct MLflow", "direct"))],
    })
    result["tables"].append({
        "title": "API-service (proxy) RSS (MiB)",
        "columns": ["before", "peak during proxy uploads", "peak during direct uploads",
                    "peak during proxy download", "after", "VmHWM before", "VmHWM after"],
        "rows": [[fmt(rss_before / 1024, 1), fmt(sampler.peak_kb.get("upload-proxy", 0) / 1024, 1),
                  fmt(sampler.peak_kb.get("upload-direct", 0) / 1024, 1),
                  fmt(sampler.peak_kb.get("download-proxy", 0) / 1024, 1), fmt(rss_after / 1024, 1),
                  fmt(hwm_before / 1024, 1), fmt(hwm_after / 1024, 1)]],
    })
    result["targets"].append(target(
        "best proxy upload time / best direct", f"<= {TARGET_RATIO:.2f} (within 20 %)",
        f"{ratio:.3f} ({fmt(best_p)} s vs {fmt(best_d)} s)", ratio <= TARGET_RATIO,
    ))
    result["targets"].append(target(
        "proxy RSS growth (peak sampled VmRSS - before)", f"< {TARGET_RSS_GROWTH_MB:.0f} MB",
        f"{growth_mb:.1f} MiB (VmHWM +{hwm_growth_mb:.1f} MiB)", growth_mb < TARGET_RSS_GROWTH_MB,
    ))
    result["targets"].append(target(
        "download through proxy: size + sha256 match", "equal", "equal" if verified else
        f"MISMATCH (size {got_size} vs {size})", verified,
    ))
    result["notes"].append(
        f"Download of the {size_mb} MiB artifact through the proxy took {fmt(dl_s)} s "
        f"({fmt(mb / dl_s, 1)} MiB/s). 1-min load during uploads: {min(loads):.2f} .. {max(loads):.2f}."
    )
    return result
