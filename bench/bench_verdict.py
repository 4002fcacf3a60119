"""Time to verdict of the live suite: cold (stack start included), attached to a running stack,
and against a port that accepts connections but never answers (vs a closed port), interleaved.

Every run is ``python -m pytest -m live ... -p no:cacheprovider`` as a subprocess with a fresh
minimal environment and ``cwd`` the repository root. Its output is read in raw chunks, each
stamped with ``time.monotonic()`` on arrival (``PYTHONUNBUFFERED=1``), which splits a cold run:

- interpreter + imports: process start to pytest's ``test session starts`` line (Python, pytest
  and its plugins, pytest-hokusai, configure);
- collection: to the ``collected N items`` line (the stack already starts in the background);
- stack start, per part: the plugin's ``hokusai: <part> ready in X s`` progress lines (auth
  service and MLflow in parallel, then the API service);
- waiting on the stack: from ``collected`` to the arrival of the last ``ready`` line (the part of
  the start that collection and the warm-up imports did not hide);
- checks: from then to the ``[100%]`` progress mark; teardown: from ``[100%]`` to exit.

Rounds interleave the six kinds of run so that other load hits them alike: cold (its own stack,
``--hokusai-stack-state-file`` pointing at nothing) and attached (to one ``hokusai-stack up``
started for the benchmark, which it never stops; ``--durations=0`` gives the seconds per check),
each with the SDK checks deselected (what the README's install, which has no SDK, runs: the
targets) and with them; a never-answering port (a listening socket that never accepts,
``--hokusai-api-url`` and ``--hokusai-auth-url`` both on it) and a closed port. Every
process the subprocesses start is tracked and checked to be gone afterwards.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import TRACKER, fmt, fresh_env, load1, new_result, target

NAME = "verdict"
COLD_TARGET_S = 12.0
ATTACHED_TARGET_S = 5.0
NO_ANSWER_TARGET_S = 5.0
REPO = Path(__file__).resolve().parent.parent
ARGS = ["-m", "live", "-p", "no:cacheprovider"]
_TIMEOUT_S = 240.0
_READY = re.compile(r"hokusai: (.+?) ready in ([0-9.]+) s")
#: pytest's per-phase durations (``--durations=0``: every setup/call/teardown of 5 ms or more)
DURATIONS = "--durations=0"
#: Deselects the four SDK checks: what a run of the README's install (no SDK) runs.
NO_SDK = ("-m", "live and not hokusai_sdk")
_DURATION = re.compile(r"^([0-9.]+)s (setup|call|teardown)\s+\S+::(\S+)", re.MULTILINE)
_FAKE_KEY = "hk_live_" + "B" * 32  # obviously fake: only ever sent to loopback ports with no service


def _timed_run(argv: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` from REPO, stamp output chunks, track its descendants; raise on timeout."""
    start = time.monotonic()
    env = fresh_env({"PYTHONUNBUFFERED": "1", **(extra_env or {})})
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    chunks: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def track() -> None:  # remember the stack's children while they exist
        while not stop.wait(0.25):
            TRACKER.add_descendants_of(proc.pid)

    tracker = threading.Thread(target=track, daemon=True)
    tracker.start()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        while True:
            if time.monotonic() - start > _TIMEOUT_S:
                raise TimeoutError(f"{' '.join(argv[2:])} took more than {_TIMEOUT_S:.0f} s")
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append((time.monotonic() - start, data))
        code = proc.wait(timeout=30)
    finally:
        stop.set()
        tracker.join(timeout=5)
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        proc.stdout.close()
    wall = time.monotonic() - start
    text = b"".join(c for _, c in chunks).decode(errors="replace")
    return {"code": code, "wall": wall, "chunks": chunks, "text": text}


def _first_time(chunks: list[tuple[float, bytes]], needle: bytes) -> float | None:
    """Arrival time of the chunk in which ``needle`` completes (handles needles split across chunks)."""
    seen = b""
    for t, data in chunks:
        seen += data
        if needle in seen:
            return t
    return None


def _median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")


def _cold_phases(run: dict[str, Any]) -> dict[str, Any]:
    chunks, text = run["chunks"], run["text"]
    t_start = _first_time(chunks, b"test session starts")
    t_collected = _first_time(chunks, b"collected ")
    t_done = _first_time(chunks, b"[100%]")
    ready = {name: float(sec) for name, sec in _READY.findall(text)}
    t_ready = max((_first_time(chunks, f"{name} ready in".encode()) or float("nan")) for name in ready) \
        if ready else float("nan")
    nan = float("nan")
    return {
        "imports": t_start or nan,
        "collection": (t_collected - t_start) if t_collected and t_start else nan,
        "auth": ready.get("auth service", nan), "mlflow": ready.get("MLflow", nan), "api": ready.get("API service", nan),
        "wait": max(0.0, t_ready - t_collected) if t_collected else nan,
        "checks": (t_done - max(t_ready, t_collected)) if t_done and t_collected else nan,
        "teardown": (run["wall"] - t_done) if t_done else nan,
    }


def _durations(text: str) -> dict[str, float]:
    """Seconds per check (setup + call + teardown) from pytest's ``--durations`` table."""
    per_check: dict[str, float] = {}
    for seconds, _phase, name in _DURATION.findall(text):
        per_check[name] = per_check.get(name, 0.0) + float(seconds)
    return per_check


def _summary(text: str) -> tuple[str, str]:
    verdict = re.search(r"verdict: (\w+)", text)
    summary = re.search(r"=+ (.*? in [0-9.]+s.*?) =+", text)
    return (verdict.group(1) if verdict else "?"), (summary.group(1) if summary else "?")


class _Up:
    """One ``hokusai-stack up`` for the attached runs (its own state file, stopped at the end)."""

    def __init__(self, state_dir: Path) -> None:
        self.state = state_dir / "stack.json"
        self.log = open(state_dir / "up.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "hokusai-stack"), "up", "--state-file", str(self.state)],
            env=fresh_env({"PYTHONUNBUFFERED": "1"}), stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while not self.state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hokusai-stack up did not write its state file (exit {self.proc.poll()})")
            time.sleep(0.2)
        TRACKER.add([self.proc.pid])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def _silent_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    from pytest_hokusai.secret import redact

    reps = 1 if quick else 3
    py = sys.executable
    result = new_result(NAME, "Time to verdict: cold, attached to a running stack, never-answering port")
    result["method"] = [
        (f"`python -m pytest {' '.join(ARGS)} ...` as a subprocess with a fresh minimal env (PATH with the "
         f"venv, HOME, LANG, TMPDIR), cwd = {REPO}; {reps} rounds, each round one run of every kind in turn: "
         "cold (`--hokusai-target=local`, no state file: starts its own stack), attached "
         "(`--hokusai-target=local --hokusai-stack-state-file` of one `hokusai-stack up` started for the "
         "benchmark; `--durations=0` for the per-check table), each once with the SDK checks deselected "
         "(`-m 'live and not hokusai_sdk'`: what the README's install, which has no SDK, runs) and once with "
         "them (the vendored SDK is installed in this venv), never-answering port (a socket that listens and never accepts; API and auth URL on it; "
         "a fake key), closed port (same, nothing listening)."),
        ("Cold phases from output arrival times: interpreter+imports (to `test session starts`), collection "
         "(to `collected`), stack start per part (progress lines: auth and MLflow in parallel, then the API "
         "service), waiting on the stack after collection (to the last `ready` line), checks (to `[100%]`), "
         "teardown (to exit)."),
        "OS page cache is warm (not a cold machine); `cold` means a fresh interpreter, env and stack.",
    ]
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (
        "cold", "cold, with SDK checks", "attached", "attached, with SDK checks", "no answer", "closed port")}
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-verdict-") as tmp:
        up = _Up(Path(tmp))
        silent = _silent_socket()
        try:
            silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            nowhere = Path(tmp) / "no-such-state.json"
            local = [py, "-m", "pytest", *ARGS, "--hokusai-target=local"]
            cold = [*local, f"--hokusai-stack-state-file={nowhere}"]
            attached = [*local, DURATIONS, f"--hokusai-stack-state-file={up.state}"]
            # The targets are taken on the suite the README installs (no SDK: its four checks skip),
            # the suite the baselines ran; the runs with the SDK checks are shown beside them.
            kinds = {
                "cold": ([*cold, *NO_SDK], {}),
                "cold, with SDK checks": (cold, {}),
                "attached": ([*attached, *NO_SDK], {}),
                "attached, with SDK checks": (attached, {}),
                "no answer": ([py, "-m", "pytest", *ARGS, "--pyargs", "pytest_hokusai.checks",
                               f"--hokusai-api-url={silent_url}", f"--hokusai-auth-url={silent_url}"],
                              {"HOKUSAI_API_KEY": _FAKE_KEY}),
            }
            for _ in range(reps):
                closed = f"http://127.0.0.1:{_closed_port()}"
                kinds["closed port"] = ([py, "-m", "pytest", *ARGS, "--pyargs", "pytest_hokusai.checks",
                                         f"--hokusai-api-url={closed}", f"--hokusai-auth-url={closed}"],
                                        {"HOKUSAI_API_KEY": _FAKE_KEY})
                for kind, (argv, env) in kinds.items():
                    load_start = load1()
                    out = _timed_run(argv, env)
                    expected = 0 if kind.startswith(("cold", "attached")) else 1
                    if out["code"] != expected:
                        raise RuntimeError(f"{kind} run exited {out['code']}: {redact(out['text'][-1500:])}")
                    verdict, summary = _summary(out["text"])
                    row = {"wall": out["wall"], "verdict": verdict, "summary": summary,
                           "load1": [load_start, load1()], "text": out["text"]}
                    if kind.startswith("cold"):
                        row.update(_cold_phases(out))
                    if kind.startswith("attached"):
                        row["durations"] = _durations(out["text"])
                    rows[kind].append(row)
        finally:
            silent.close()
            up.stop()
    medians = {kind: _median([r["wall"] for r in runs]) for kind, runs in rows.items()}
    result["metrics"] = {"median_wall_s": medians,
                         "runs": {k: [{n: v for n, v in r.items() if n != "text"} for r in runs]
                                  for k, runs in rows.items()}}
    cold_runs = [(kind, i + 1, r) for kind in ("cold", "cold, with SDK checks") for i, r in enumerate(rows[kind])]
    result["tables"].append({
        "title": "Cold runs, phases (seconds)",
        "columns": ["kind", "run", "total wall", "interpreter+imports", "collection", "stack: auth", "stack: MLflow",
                    "stack: API", "waiting on stack", "checks", "teardown", "verdict", "pytest summary",
                    "load1 start/end"],
        "rows": [[kind, i, fmt(r["wall"], 1), fmt(r["imports"], 1), fmt(r["collection"], 1), fmt(r["auth"], 1),
                  fmt(r["mlflow"], 1), fmt(r["api"], 1), fmt(r["wait"], 1), fmt(r["checks"], 1),
                  fmt(r["teardown"], 1), r["verdict"], r["summary"], f"{r['load1'][0]:.2f}/{r['load1'][1]:.2f}"]
                 for kind, i, r in cold_runs],
    })
    result["tables"].append({
        "title": "Every run, in the order taken per round (seconds)",
        "columns": ["kind", "runs (wall)", "median", "verdicts", "load1 at each start"],
        "rows": [[kind, ", ".join(fmt(r["wall"], 1) for r in runs), fmt(medians[kind], 1),
                  ", ".join(r["verdict"] for r in runs), ", ".join(f"{r['load1'][0]:.2f}" for r in runs)]
                 for kind, runs in rows.items()],
    })
    passing = [r for kind, runs in rows.items() if kind.startswith(("cold", "attached")) for r in runs]
    no_answer_codes = ["HOST_UNREACHABLE" if "ROOT CAUSE: HOST_UNREACHABLE" in r["text"] else "other"
                       for r in rows["no answer"]]
    readme = "the README's install: the SDK checks not run, as in the issue's baselines"
    result["targets"] += [
        target(f"cold: median time to verdict, stack start included ({readme})",
               f"<= {COLD_TARGET_S:.0f} s (quiet machine)", f"{medians['cold']:.1f} s", medians["cold"] <= COLD_TARGET_S),
        target(f"attached to a running stack: median time to verdict, full live suite ({readme})",
               f"<= {ATTACHED_TARGET_S:.0f} s", f"{medians['attached']:.1f} s", medians["attached"] <= ATTACHED_TARGET_S),
        target("cold / attached with the vendored SDK installed (its four checks run; info)", "-",
               f"{medians['cold, with SDK checks']:.1f} s / {medians['attached, with SDK checks']:.1f} s", None),
        target("never-answering port: median time to verdict", f"<= {NO_ANSWER_TARGET_S:.0f} s",
               f"{medians['no answer']:.1f} s (closed port: {medians['closed port']:.1f} s)",
               medians["no answer"] <= NO_ANSWER_TARGET_S),
        target("never-answering port: root cause", "HOST_UNREACHABLE", ", ".join(no_answer_codes),
               all(c == "HOST_UNREACHABLE" for c in no_answer_codes)),
        target("cold and attached verdicts", "PASS", ", ".join(r["verdict"] for r in passing),
               all(r["verdict"] == "PASS" for r in passing)),
    ]
    with_sdk = rows["attached, with SDK checks"]
    checks = sorted({name for r in with_sdk for name in r["durations"]},
                    key=lambda name: -_median([r["durations"].get(name, 0.0) for r in with_sdk]))
    check_medians = {name: _median([r["durations"].get(name, 0.0) for r in with_sdk]) for name in checks}
    result["metrics"]["attached_check_medians_s"] = check_medians
    result["tables"].append({
        "title": "Where an attached run's seconds go: per check (setup + call + teardown) in the attached runs "
                 "with the SDK checks, median, the 10 slowest",
        "columns": ["check", "median s", "runs (s)"],
        "rows": [[name, fmt(check_medians[name], 2), ", ".join(fmt(r["durations"].get(name, 0.0), 2) for r in with_sdk)]
                 for name in checks[:10]],
    })
    for kind in ("attached", "attached, with SDK checks"):
        own = _median([sum(r["durations"].values()) for r in rows[kind]])
        rest = _median([r["wall"] - sum(r["durations"].values()) for r in rows[kind]])
        result["notes"].append(
            f"{kind}: the checks' own time is {own:.1f} s (median); interpreter start, imports, attaching, "
            f"collection, the diagnosis and exit take the other {rest:.1f} s of the wall time.")
    for kind in ("cold", "cold, with SDK checks"):
        phase_medians = {p: _median([r[p] for r in rows[kind]]) for p in
                         ("imports", "collection", "auth", "mlflow", "api", "wait", "checks", "teardown")}
        result["metrics"][f"{kind}_phase_medians_s"] = phase_medians
        result["notes"].append(
            ("{kind}: phase medians: interpreter+imports {imports:.1f} s, collection {collection:.1f} s, stack "
             "start auth {auth:.1f} s / MLflow {mlflow:.1f} s / API {api:.1f} s (auth and MLflow in parallel, "
             "overlapping collection), waiting on the stack after collection {wait:.1f} s, checks {checks:.1f} s, "
             "teardown {teardown:.1f} s.").format(kind=kind, **phase_medians))
    return result
