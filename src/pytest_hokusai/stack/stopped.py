"""The ``auth-stopped`` and ``mlflow-stopped`` faults: the part's process is really stopped, so its
port refuses connections, while the API service keeps answering as the real one does (contract 2.4
and 5): 503 ``{"detail": "Authentication service unavailable"}`` with ``Retry-After: 1``, or 502
``{"detail": "Failed to connect to MLflow server at <base>"}``. Nothing in the services fakes
those answers; they are what the middleware and the proxy say on a refused connection.

Switching the fault off starts the same command again (same port, same data directory, so keys and
models are still there) and waits for it to be ready. Only the process that started the stack owns
its processes, so a handle from :meth:`~.launcher.Stack.from_json` cannot switch these faults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..errors import StackError
from .config import STACK_TOKEN_HEADER
from .faults import PROCESS_FAULTS
from .mlflow_server import mlflow_ready_check
from .process import ManagedProcess, http_ok, start_watchdog, wait_all_ready

__all__ = ["RESTART_TIMEOUT_S", "is_running", "restart_parts", "stop_parts", "without_process_faults"]

#: How long a restarted part may take to be ready again (MLflow takes ~8-20 s on two cores).
RESTART_TIMEOUT_S = 90.0


def without_process_faults(names: Iterable[str]) -> tuple[str, ...]:
    """The faults the services act on themselves (everything but the process faults)."""
    return tuple(n for n in names if n not in PROCESS_FAULTS)


class StackHandle(Protocol):
    """What these functions use of :class:`.launcher.Stack`.

    A protocol, not an import: launcher.py imports this module, so importing the class back
    (even for typing only) would be an import loop.
    """

    auth_url: str
    mlflow_url: str
    admin_token: str
    _processes: list[ManagedProcess]


def _process(stack: StackHandle, name: str) -> ManagedProcess | None:
    return next((p for p in stack._processes if p.name == name), None)


def is_running(stack: StackHandle, fault: str) -> bool:
    """Whether the part ``fault`` stops is running (True for a handle: it cannot tell, nor act)."""
    proc = _process(stack, PROCESS_FAULTS[fault])
    return proc is None or proc.is_running()


def _owner_check(stack: StackHandle, faults: Iterable[str]) -> None:
    wanted = [f for f in faults if f in PROCESS_FAULTS]
    if wanted and not stack._processes:
        raise StackError(f"{', '.join(wanted)} stops a process of the stack: only the process that started it "
                         "(hokusai-stack up, start_stack) can switch it")


def _ready_check(stack: StackHandle, proc: ManagedProcess) -> Callable[[], bool]:
    if proc.name == PROCESS_FAULTS["mlflow-stopped"]:
        return mlflow_ready_check(stack.mlflow_url)
    url = stack.auth_url + "/_stack/faults"
    headers = {STACK_TOKEN_HEADER: stack.admin_token}
    return lambda: http_ok(url, timeout=2.0, headers=headers)


def stop_parts(stack: StackHandle, faults: Iterable[str]) -> None:
    """Stop the process of every process fault in ``faults`` that is still running."""
    faults = list(faults)
    _owner_check(stack, faults)
    for fault, name in PROCESS_FAULTS.items():
        proc = _process(stack, name)
        if fault in faults and proc is not None and proc.is_running():
            proc.stop()


def restart_parts(stack: StackHandle, faults: Iterable[str]) -> None:
    """Start again (same command, port and data) every stopped part whose fault is not in ``faults``."""
    faults = list(faults)
    _owner_check(stack, faults)  # before any service is told about the faults
    for fault, name in PROCESS_FAULTS.items():
        old = _process(stack, name)
        if fault in faults or old is None or old.is_running():
            continue
        started = time.monotonic()
        new = ManagedProcess(old.name, old.argv, log_path=old.log_path, env=old.env, cwd=old.cwd).start()
        stack._processes[stack._processes.index(old)] = new
        # the launcher's watchdog knows the old group only: watch the new one too
        stack._processes.append(start_watchdog([new], old.log_path.parent / f"watchdog-{new.pid}.log"))
        try:
            wait_all_ready([(new, _ready_check(stack, new))], RESTART_TIMEOUT_S, since=started)
        except StackError:
            new.stop()
            raise
