"""A real loopback TCP port that accepts connections and never answers (no status, no byte).

The kernel completes the handshake for every connection queued on a listening socket, so a client
connects at once and then waits for an answer that never comes: the "no answer" failure of a hung
service or a black-holing balancer, with nothing mocked.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["silent_port"]


@contextmanager
def silent_port() -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT`` of a socket that listens (backlog 128) and never accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
