"""Import what the live checks will need while the run does something else.

A live run's first checks talk HTTP (auth, bearer, proxy) and, on a cold local run, wait seconds
for the stack; meanwhile the pytest process is mostly idle. A daemon thread imports MLflow's
client, scikit-learn and pandas then (about two seconds of CPU that the first check using them
would otherwise spend). It starts after collection, and only when a selected live check uses
MLflow or the toy model (an in-process run that never needed them must not load them). The fixtures that need those packages call
:func:`join` before importing them, so the main thread never imports a package the warm-up thread
is importing (no import-lock contention between the two). Missing packages are skipped: the check
that needs one reports it. Nothing is imported at collection time. The thread never outlives the
session: :func:`stop` (at session finish) lets it finish the module it is importing and joins it,
so an in-process run (pytester) never has a thread importing while pytest restores ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
import threading
from importlib.util import find_spec

__all__ = ["WARM_MODULES", "join", "preload", "start", "stop"]

#: What the shipped checks and fixtures import lazily (registry.py, the toy model, log_model).
WARM_MODULES = (
    "numpy", "pandas", "mlflow", "mlflow.tracking._model_registry.utils", "mlflow.models",
    "sklearn.linear_model", "mlflow.sklearn",
)
_JOIN_TIMEOUT_S = 120.0
_thread: threading.Thread | None = None
_lock = threading.Lock()
_stopping = threading.Event()


def preload(modules: tuple[str, ...] = WARM_MODULES, stop: threading.Event | None = None) -> list[str]:
    """Import ``modules`` in order (skipping absent packages, stopping early once ``stop`` is set);
    return the ones imported here."""
    done: list[str] = []
    for name in modules:
        if stop is not None and stop.is_set():
            break
        if name in sys.modules:
            continue
        try:
            if find_spec(name.split(".")[0]) is None:
                continue
            importlib.import_module(name)
        except Exception:  # noqa: BLE001,S112 - a warm-up must never fail a run; the check will say why
            continue
        done.append(name)
    return done


def start() -> None:
    """Start the warm-up thread once per process (no-op if it already ran or runs)."""
    global _thread
    with _lock:
        if _thread is None:
            _stopping.clear()
            _thread = threading.Thread(target=preload, kwargs={"stop": _stopping}, name="hokusai-warmup",
                                       daemon=True)
            _thread.start()


def stop() -> None:
    """Stop the warm-up after the module it is importing, and wait for it (session end)."""
    global _thread
    _stopping.set()
    join()
    with _lock:
        _thread = None


def join() -> None:
    """Wait for the warm-up thread, if one was started (bounded)."""
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(_JOIN_TIMEOUT_S)
