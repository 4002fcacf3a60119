"""Shared helpers for the benchmarks: statistics, load average, process RSS, process tracking, results.

Every benchmark module exposes ``run(quick: bool = False) -> dict`` returning a result built with
:func:`new_result`; ``bench/run.py`` prints and renders them. Nothing here imports heavy modules.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "TRACKER",
    "ProcTracker",
    "RssSampler",
    "api_service_pid",
    "fmt",
    "fresh_env",
    "load1",
    "loadavg",
    "new_result",
    "pct",
    "proc_status_kb",
    "stats_ms",
    "target",
]

HTTP_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for every benchmark request


# -- statistics ---------------------------------------------------------------------------------
def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, linear interpolation between ranks."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean / min / max of durations given in seconds, returned in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": float(len(ms)),
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "mean": statistics.fmean(ms) if ms else float("nan"),
        "min": min(ms) if ms else float("nan"),
        "max": max(ms) if ms else float("nan"),
    }


# -- load ---------------------------------------------------------------------------------------
def loadavg() -> tuple[float, float, float]:
    """``os.getloadavg()`` rounded to two decimals."""
    a, b, c = os.getloadavg()
    return (round(a, 2), round(b, 2), round(c, 2))


def load1() -> float:
    """The one-minute load average."""
    return loadavg()[0]


# -- processes ----------------------------------------------------------------------------------
def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``, ...) of ``/proc/<pid>/status``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def api_service_pid(stack: Any) -> int:
    """The pid of the stack's API service (the authenticating proxy) process.

    Uses the launcher's process list (``Stack._processes``, each a ``ManagedProcess`` with a
    ``name``); checks the command line so a wrong guess fails loudly.
    """
    for proc in getattr(stack, "_processes", ()):
        if getattr(proc, "name", "") == "API service":
            pid = int(proc.pid)
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            if "pytest_hokusai.stack.serve" not in cmd:
                raise RuntimeError(f"pid {pid} does not look like the API service: {cmd[:120]!r}")
            return pid
    raise RuntimeError("no 'API service' process in this stack")


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks): tells pid reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except OSError:
        return None
    rest = data.rsplit(")", 1)[-1].split()
    if len(rest) < 20 or rest[0] == "Z":  # zombie: exited, not yet reaped -> counts as gone
        return None
    return rest[19]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                rest = fh.read().rsplit(")", 1)[-1].split()
            children.setdefault(int(rest[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class ProcTracker:
    """Remembers processes we started (pid + start time) and tells which of them are still alive."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[str, str]] = {}  # pid -> (start time, command line)
        self._lock = threading.Lock()

    def add(self, pids: Iterable[int]) -> None:
        """Remember these pids and all their current descendants."""
        children = _children_map()
        todo = list(pids)
        while todo:
            pid = todo.pop()
            start = _start_time(pid)
            if start is None:
                continue
            with self._lock:
                self._seen.setdefault(pid, (start, _cmdline(pid)[:160]))
            todo.extend(children.get(pid, ()))

    def add_descendants_of(self, pid: int) -> None:
        """Remember every current descendant of ``pid`` (not ``pid`` itself)."""
        self.add(_children_map().get(pid, []))

    def alive(self) -> list[str]:
        """``"pid command"`` of every remembered process still running (same start time)."""
        with self._lock:
            items = list(self._seen.items())
        return [f"{pid} {cmd}" for pid, (start, cmd) in items if _start_time(pid) == start]

    def count(self) -> int:
        with self._lock:
            return len(self._seen)


#: Shared by all benchmarks of one ``run.py`` invocation.
TRACKER = ProcTracker()


class RssSampler:
    """Polls ``VmRSS`` of one pid every ``interval`` s in a daemon thread; keeps the max per phase."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.phase = "idle"
        self.peak_kb: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_kb(self.pid, "VmRSS")
            if rss is not None:
                self.samples += 1
                phase = self.phase
                if rss > self.peak_kb.get(phase, 0):
                    self.peak_kb[phase] = rss
            self._stop.wait(self.interval)


def fresh_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for a "cold shell" subprocess: no MLFLOW_*/HOKUSAI_*/PYTEST_* leaks."""
    venv_bin = os.path.dirname(os.path.abspath(__import__("sys").executable))
    env = {
        "PATH": venv_bin + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    env.update(extra or {})
    return env


# -- results ------------------------------------------------------------------------------------
def target(what: str, goal: str, measured: str, ok: bool | None) -> dict[str, Any]:
    """One target row: what is measured, the goal text, the measured text, PASS/MISS (None = info)."""
    return {"what": what, "target": goal, "measured": measured, "pass": ok}


def new_result(name: str, title: str) -> dict[str, Any]:
    """An empty result dict for benchmark ``name`` (``run.py`` fills in timing and errors)."""
    return {
        "name": name,
        "title": title,
        "method": [],       # lines describing how it was measured
        "targets": [],      # target(...) rows
        "tables": [],       # {"title": str, "columns": [...], "rows": [[...], ...]}
        "metrics": {},      # flat raw numbers
        "notes": [],
        "load": {"start": loadavg()},
        "started": time.time(),
    }


def fmt(value: float, digits: int = 2) -> str:
    """A number with ``digits`` decimals (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"
