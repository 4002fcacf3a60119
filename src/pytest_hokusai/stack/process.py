"""Child processes of the local stack: own process group, log file, bounded readiness, sure stop.

Every part of the stack (the MLflow server, the auth and API services) runs as a
:class:`ManagedProcess`:

- it starts in its own session and process group (``start_new_session=True``), so that stopping
  it reaches every process it forked (MLflow's uvicorn worker included);
- it gets an explicit, minimal environment (:func:`minimal_env`), never the caller's whole one;
- its stdout and stderr go to a log file, whose redacted tail goes into every startup error;
- :meth:`ManagedProcess.wait_ready` polls a readiness check on a ``time.monotonic()`` deadline and
  fails at once if the child exits;
- :meth:`ManagedProcess.stop` sends SIGTERM to the group, waits, then SIGKILLs the group and waits
  again; it is idempotent and safe on a process that is already gone.

As a safety net every started group is remembered in a module registry and stopped at interpreter
exit, but callers must still stop what they start (the launcher does, in ``finally``).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..errors import StackError
from ..secret import redact

__all__ = [
    "ManagedProcess",
    "free_port",
    "group_pids",
    "http_ok",
    "minimal_env",
    "start_watchdog",
    "wait_all_ready",
]

#: Variables a child may inherit from the caller (everything else is dropped).
_PASSED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ",
    "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT",
    # Subprocess coverage (pytest-cov / coverage's process startup hook).
    "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COV_CORE_SOURCE", "COV_CORE_CONFIG", "COV_CORE_DATAFILE",
)
_POLL_INTERVAL_S = 0.1

_registry_lock = threading.Lock()
_registry: dict[int, ManagedProcess] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: An opener that ignores *_proxy variables: the stack lives on loopback.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> bool:
    """Whether ``GET url`` answers 200 within ``timeout`` seconds (a readiness probe)."""
    request = urllib.request.Request(url, method="GET", headers=dict(headers or {}))
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small environment for a child: PATH, HOME, locale, temp dir, Python path, plus ``extra``.

    Nothing else from the caller's environment leaks in (no ``MLFLOW_TRACKING_*``, no
    ``HOKUSAI_API_KEY``, no proxies).
    """
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


def group_pids(pgid: int) -> list[int]:
    """Every live (non-zombie) process in process group ``pgid``, read from ``/proc``.

    Without ``/proc`` (not Linux) it returns ``[pgid]`` if the group can still be signalled.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


class ManagedProcess:
    """One child process in its own process group, logging to a file.

    Example::

        proc = ManagedProcess("sleeper", ["sleep", "30"], log_path=data_dir / "sleeper.log").start()
        try:
            proc.wait_ready(lambda: True, deadline_s=5)
        finally:
            proc.stop()
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else minimal_env()
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "not started" if self._popen is None else f"pid {self._popen.pid}"
        return f"ManagedProcess({self.name!r}, {state})"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        """Start the child in a new session; return self. Raises :class:`StackError` if exec fails."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(  # argv built by the stack, no shell
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(f"{self.name} could not be started ({self.argv[0]}): {exc}") from exc
        with _registry_lock:
            _registry[self._popen.pid] = self
        return self

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen.pid

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (an exit after it is no failure)."""
        return self._stopped

    def poll(self) -> int | None:
        """The child's exit status, or ``None`` while it runs."""
        return None if self._popen is None else self._popen.poll()

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def pids(self) -> list[int]:
        """All live pids of the child's process group (the child and whatever it forked)."""
        if self._popen is None:
            return []
        self._popen.poll()  # reap the leader if it has exited, so it does not count as a zombie
        return group_pids(self._popen.pid)

    def wait_ready(self, check: Callable[[], bool], deadline_s: float) -> float:
        """Poll ``check`` until it returns True; return the seconds it took since this call.

        Raises :class:`StackError` with the log tail if the child exits first or ``deadline_s``
        seconds pass. Exceptions from ``check`` count as "not ready yet".
        """
        return wait_all_ready([(self, check)], deadline_s)[self.name]

    def terminate(self) -> None:
        """Send SIGTERM to the group without waiting (lets several children stop in parallel)."""
        if self._popen is not None and not self._stopped:
            _signal_group(self._popen.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL the group and wait.

        Idempotent; safe when the child (or its whole group) is already gone. Returns the leader's
        exit status (``None`` if it was never started).
        """
        with self._lock:
            if self._popen is None:
                return None
            pgid = self._popen.pid
            if not self._stopped:
                self._stopped = True
                _signal_group(pgid, signal.SIGTERM)
                if not self._wait_group(timeout):
                    _signal_group(pgid, signal.SIGKILL)
                    self._wait_group(5.0)
            with _registry_lock:
                _registry.pop(pgid, None)
            try:
                return self._popen.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                return None

    def _wait_group(self, timeout: float) -> bool:
        """Wait until the leader is reaped and no process of the group is left; False on timeout."""
        assert self._popen is not None
        deadline = time.monotonic() + timeout
        while True:
            self._popen.poll()
            if self._popen.returncode is not None and not group_pids(self._popen.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # -- output -------------------------------------------------------------------------------
    def tail(self, n_lines: int = 30) -> str:
        """The last ``n_lines`` of the child's log, with every known API key masked."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                data = log.read()
        except OSError:
            return ""
        lines = data.decode("utf-8", errors="replace").splitlines()
        return redact("\n".join(lines[-n_lines:]))

    def failure(self, reason: str, n_lines: int = 30) -> StackError:
        """A :class:`StackError` saying ``reason`` with this child's log tail."""
        tail = self.tail(n_lines)
        body = "\n".join("    " + line for line in tail.splitlines()) if tail else "    (empty)"
        return StackError(f"{self.name} {reason}\n  last lines of {self.log_path}:\n{body}")


def wait_all_ready(
    waits: Sequence[tuple[ManagedProcess, Callable[[], bool]]],
    deadline_s: float,
    *,
    on_ready: Callable[[ManagedProcess, float], None] | None = None,
    since: float | None = None,
) -> dict[str, float]:
    """Wait for several children at once; return each one's readiness time in seconds.

    Fails (with :class:`StackError` carrying the failing child's log tail) as soon as any waited
    child exits, or when the monotonic deadline passes: ``deadline_s`` after ``since`` (a
    ``time.monotonic()`` value; default now). ``on_ready`` is called as each one is ready, with
    the seconds since this call.
    """
    start = time.monotonic()
    deadline = (start if since is None else since) + deadline_s
    pending = list(waits)
    ready: dict[str, float] = {}
    while pending:
        for item in list(pending):
            proc, check = item
            code = proc.poll()
            if code is not None:
                raise proc.failure(f"exited with status {code} before it was ready")
            try:
                ok = check()
            except Exception:  # noqa: BLE001 - any failure of a probe means "not ready yet"
                ok = False
            if ok:
                ready[proc.name] = time.monotonic() - start
                pending.remove(item)
                if on_ready is not None:
                    on_ready(proc, ready[proc.name])
        if not pending:
            break
        if time.monotonic() >= deadline:
            proc = pending[0][0]
            raise proc.failure(f"was not ready within {deadline_s:g} s")
        time.sleep(_POLL_INTERVAL_S)
    return ready


#: The watchdog: waits for its parent (the launcher) to vanish without teardown (SIGKILL,
#: os._exit), then stops the given process groups. A normal stop SIGTERMs it first: it just exits.
_WATCHDOG = """
import os, signal, sys, time
parent, groups = int(sys.argv[1]), [int(a) for a in sys.argv[2:]]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while os.getppid() == parent:
    time.sleep(0.5)
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for g in groups:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    end = time.monotonic() + wait
    while time.monotonic() < end and any(alive(g) for g in groups):
        time.sleep(0.1)
"""


def start_watchdog(processes: Sequence[ManagedProcess], log_path: Path) -> ManagedProcess:
    """Start a tiny process that stops ``processes``' groups if this process dies without teardown.

    Teardown (``stop()``) is still the rule; this covers a launcher killed by SIGKILL or
    ``os._exit`` (e.g. pytest-timeout's thread method), where neither ``finally`` nor atexit runs.
    """
    argv = [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *(str(p.pid) for p in processes)]
    return ManagedProcess("watchdog", argv, log_path=log_path, env=minimal_env()).start()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all() -> None:
    """atexit safety net: stop every group still registered (teardown should have done it)."""
    with _registry_lock:
        procs = list(_registry.values())
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=3.0)


atexit.register(_stop_all)
