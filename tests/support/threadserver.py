"""Run an ASGI app under a real uvicorn server in a background thread, for tests.

:func:`serve_app` binds 127.0.0.1 on a free port itself (port 0, so there is no race between
picking and binding), starts uvicorn on that socket in a thread, waits for startup (lifespan
included) on a monotonic deadline, yields the base URL, and always stops the server on exit::

    from tests.support.threadserver import serve_app

    with serve_app(app) as base_url:
        httpx.get(f"{base_url}/health", timeout=5)

If the app's lifespan fails or the server does not come up in time, the thread is stopped and
:class:`ServerStartError` is raised. If the server does not stop within ``shutdown_timeout``,
uvicorn is told to force-exit; a thread still alive after that raises :class:`ServerStopError`
rather than being silently leaked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["ServerStartError", "ServerStopError", "serve_app"]


class ServerStartError(RuntimeError):
    """The server exited during startup or was not ready before the deadline."""


class ServerStopError(RuntimeError):
    """The server thread was still alive after a forced exit."""


def _bind_free_port(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def serve_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    **uvicorn_options: Any,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield ``http://127.0.0.1:<port>``.

    ``uvicorn_options`` go to :class:`uvicorn.Config` and override these defaults: lifespan
    ``"on"`` (a failing startup is an error), no websockets, no access log, ``log_config=None``
    (the process's logging setup is left alone, so pytest's caplog sees uvicorn's records),
    log level ``warning`` and a 5 s graceful-shutdown limit for in-flight requests.
    """
    import uvicorn

    options: dict[str, Any] = {
        "lifespan": "on",
        "ws": "none",
        "access_log": False,
        "log_config": None,
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
    }
    options.update(uvicorn_options)
    sock = _bind_free_port(host)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise ServerStartError(
                    f"uvicorn on {host}:{port} exited during startup"
                    + (f": {failure[0]!r}" if failure else " (see the log for the lifespan error)")
                ) from (failure[0] if failure else None)
            if time.monotonic() > deadline:
                raise ServerStartError(f"uvicorn on {host}:{port} not ready after {startup_timeout} s")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(shutdown_timeout)
        sock.close()
        if thread.is_alive():
            raise ServerStopError(f"uvicorn on {host}:{port} did not stop within {2 * shutdown_timeout} s")
