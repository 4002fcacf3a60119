"""A loopback HTTP server in a thread that gives every request one fixed answer, and counts what
reached it: the TCP connections it accepted and the requests (``"GET /path"``).

For tests of what the suite does against something that is not a Hokusai deployment (a port that
answers ``{}`` to everything, a website's catch-all page)::

    with serving(FixedAnswerServer(b"<html>...", "text/html")) as server:
        run(api_url=server.url)
        assert server.connections == 1
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FixedAnswerServer", "serving"]


class FixedAnswerServer(http.server.ThreadingHTTPServer):
    """Answers every method on every path with ``status``, ``content_type`` and ``body``."""

    daemon_threads = True

    def __init__(self, body: bytes = b"{}", content_type: str = "application/json", status: int = 200) -> None:
        self.body, self.content_type, self.status = body, content_type, status
        self.connections = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _FixedAnswer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)


class _FixedAnswer(http.server.BaseHTTPRequestHandler):
    server: FixedAnswerServer

    def _answer(self) -> None:
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:  # read what was sent, so the client never meets a reset while still sending
            self.rfile.read(length)
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.server.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read .requests
        pass


@contextmanager
def serving(server: FixedAnswerServer) -> Iterator[FixedAnswerServer]:
    """Serve in a daemon thread for the block; then stop and close the socket."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
