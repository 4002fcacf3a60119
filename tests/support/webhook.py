"""A loopback webhook receiver for the notification tests (standard library only).

:func:`serve_webhook` starts a threaded HTTP server on 127.0.0.1 (port 0), records every request
(method, path, parsed JSON body) and answers according to ``mode``:

* ``ok``: 200 ``ok`` (what Slack answers);
* ``error``: 500 ``{"error": "broken"}``;
* ``slow``: accepts the request and answers nothing until the server is stopped.

The server and its handler threads are always stopped on exit (a ``slow`` handler is released first).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Received", "WebhookServer", "serve_webhook"]


@dataclass
class Received:
    method: str
    path: str
    body: bytes
    content_type: str | None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class WebhookServer:
    url: str
    received: list[Received] = field(default_factory=list)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.records: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.records.append(Received("POST", self.path, body, self.headers.get("Content-Type")))
        if self.server.mode == "slow":
            self.server.release.wait(60)
            return
        status, payload = (200, b"ok") if self.server.mode == "ok" else (500, b'{"error": "broken"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_webhook(mode: str = "ok", path: str = "/services/T000/B000/not-a-real-secret") -> Iterator[WebhookServer]:
    """A running receiver; ``.url`` includes ``path`` (a webhook's secret lives in its path)."""
    server = _Server(mode)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    view = WebhookServer(url=f"http://127.0.0.1:{server.server_address[1]}{path}")
    view.received = server.records
    try:
        yield view
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
