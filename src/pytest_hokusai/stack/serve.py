"""Run one stack service (auth or API) under uvicorn: ``python -m pytest_hokusai.stack.serve``.

The service's config comes as JSON in ``HOKUSAI_STACK_SERVICE_CONFIG`` (written by the launcher,
read with :func:`~pytest_hokusai.stack.config.load_service_config`); its ``kind`` picks the app.
SIGTERM and SIGINT shut the server down gracefully and the process exits 0. If
``HOKUSAI_STACK_PARENT_PID`` is set, the service also shuts down when that process goes away,
so a launcher killed without teardown does not leave services behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from .config import AuthServiceConfig, load_service_config

__all__ = ["PARENT_PID_ENV", "build_app", "main"]

PARENT_PID_ENV = "HOKUSAI_STACK_PARENT_PID"
_GRACEFUL_SHUTDOWN_S = 3


def build_app(config: Any) -> Any:
    """The FastAPI app for ``config``: the auth service or the API service."""
    if isinstance(config, AuthServiceConfig):
        from .auth_service import create_app as create_auth_app

        return create_auth_app(config)
    from .api_service import create_app as create_api_app

    return create_api_app(config)


def _cache_missing_optional_modules() -> None:
    """Make a failing import of an absent optional module cheap for the life of the process.

    httpcore imports ``sniffio`` inside every async lock's setup (several times per proxied
    request) and falls back to asyncio when it is missing; newer anyio no longer installs it. A
    failing import scans ``sys.path`` every time (~0.15 ms each, about 0.6 ms of CPU per proxied
    request). ``sys.modules[name] = None`` makes that import fail at once, with the same outcome.
    """
    from importlib.util import find_spec

    for name in ("sniffio",):
        if name not in sys.modules and find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def _watch_parent(server: Any, parent_pid: int) -> None:
    """Ask the server to exit once the launcher process is gone (re-parented child)."""
    stop = threading.Event()
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            server.should_exit = True
            return


def main() -> int:
    """Build the app from the env config and serve it until SIGTERM/SIGINT; return the exit status."""
    import uvicorn

    try:
        config = load_service_config()
    except (RuntimeError, ValueError, TypeError) as exc:
        print(f"hokusai stack service: bad config: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {config.kind} %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO; a URL can carry ?api_key=..., so keep it quiet.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _cache_missing_optional_modules()
    app = build_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    ))
    # uvicorn captures SIGTERM/SIGINT, shuts down gracefully, restores these handlers and then
    # re-raises the signal; no-op handlers make that re-raise harmless, so the exit status is 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    parent = os.environ.get(PARENT_PID_ENV, "")
    if parent.isdigit():
        threading.Thread(target=_watch_parent, args=(server, int(parent)), daemon=True,
                         name="parent-watch").start()
    server.run()
    # A failed bind (port taken) makes uvicorn return without serving: report it as a failure.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
