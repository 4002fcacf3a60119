"""Evidence: redacted records of every HTTP exchange a run makes.

An :class:`Exchange` is what the diagnosis rules and the reports read: method, URL (query secrets
removed), status, content type, a short redacted body excerpt, latency, and for failures before
any status the error class (``dns``, ``refused``, ``tls``, ``timeout``, ``connection``).
A :class:`Recorder` collects them, thread-safe, tagged with the test (node id) or probe that made
them. Nothing in this module imports a third-party library.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .secret import redact

__all__ = [
    "ERROR_CLASSES",
    "Exchange",
    "Recorder",
    "clean_url",
    "excerpt",
    "request_body_shape",
]

#: Failure classes for exchanges that got no HTTP status.
ERROR_CLASSES = ("dns", "refused", "tls", "timeout", "connection", "invalid-url", "other")
#: Query parameters whose values are dropped from recorded URLs.
SECRET_QUERY_KEYS = frozenset({"api_key", "apikey", "key", "token", "access_token", "password"})
EXCERPT_CHARS = 300


def clean_url(url: str) -> str:
    """Remove secret query values and redact any known key from a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.query:
        query = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, True)]
        parts = parts._replace(query=urlencode(query, safe="*/:"))
    if parts.password or parts.username:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return redact(urlunsplit(parts))


REQUEST_BODY_CHARS = 2000


def request_body_shape(json_body: Any = None, data: Any = None) -> str | None:
    """The redacted shape of a request body, for :attr:`Exchange.request_body`.

    A JSON body is kept as JSON text (keys masked by :func:`redact`); a short text body as it is;
    anything else by its size (``<N bytes>``) or as ``<stream>``.
    """
    import json

    if json_body is not None:
        try:
            text = json.dumps(json_body, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return "<json>"
        return redact(text) if len(text) <= REQUEST_BODY_CHARS else f"<{len(text.encode())} bytes of JSON>"
    if data is None:
        return None
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    if isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
        if len(raw) <= 200 and b"\x00" not in raw:
            try:
                return redact(raw.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return f"<{len(raw)} bytes>"
    if isinstance(data, dict):
        return redact(urlencode(list(data.items())))
    return "<stream>"


def excerpt(body: bytes | str | None, limit: int = EXCERPT_CHARS) -> str:
    """A short, redacted, single-line excerpt of a body (binary bodies summarised by size)."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        if b"\x00" in body[:512]:
            return f"<{len(body)} bytes binary>"
        text = body[: limit * 4].decode("utf-8", errors="replace")
    else:
        text = body[: limit * 4]
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class Exchange:
    """One HTTP request and its answer (or the error that stopped it), already redacted."""

    method: str
    url: str
    status: int | None = None
    content_type: str | None = None
    body_excerpt: str = ""
    elapsed_ms: float = 0.0
    error: str | None = None  #: one of ERROR_CLASSES when no status was received
    error_detail: str | None = None
    auth: str = "none"  #: how the key was presented, masked: ``Bearer hk_live_…wxyz``, ``none``
    label: str | None = None  #: probe or purpose, e.g. ``probe:proxy-no-key``
    nodeid: str | None = None  #: the test that made it, if any
    headers: dict[str, str] = field(default_factory=dict)  #: selected response headers
    started_at: float = field(default_factory=time.time)
    #: the request body's shape, redacted: JSON text (a key in it masked like ``auth``), a short text,
    #: or ``<N bytes>``; ``None`` when the request had no body. Issue reports rebuild the request from it.
    request_body: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def is_json(self) -> bool:
        return bool(self.content_type and "json" in self.content_type)

    def summary(self) -> str:
        """One line: ``POST https://auth/api/v1/keys/validate -> 401 {"detail": ...} (12 ms)``."""
        if self.status is None:
            outcome = f"{self.error or 'error'}: {self.error_detail or ''}".rstrip(": ")
        else:
            outcome = str(self.status)
            if self.body_excerpt:
                outcome += " " + self.body_excerpt[:160]
        return f"{self.method} {self.url} [{self.auth}] -> {outcome} ({self.elapsed_ms:.0f} ms)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Thread-safe collection of :class:`Exchange` records for one run."""

    def __init__(self, limit: int = 20000) -> None:
        self._lock = threading.Lock()
        self._items: list[Exchange] = []
        self._limit = limit
        self._local = threading.local()
        self.dropped = 0

    # The node id / label of whatever is running now, per thread, so exchanges made from helper
    # threads of a test can be attributed with an explicit context.
    @contextmanager
    def context(self, *, nodeid: str | None = None, label: str | None = None) -> Iterator[None]:
        previous = (getattr(self._local, "nodeid", None), getattr(self._local, "label", None))
        self._local.nodeid = nodeid if nodeid is not None else previous[0]
        self._local.label = label if label is not None else previous[1]
        try:
            yield
        finally:
            self._local.nodeid, self._local.label = previous

    def add(self, exchange: Exchange) -> Exchange:
        if exchange.nodeid is None:
            exchange.nodeid = getattr(self._local, "nodeid", None)
        if exchange.label is None:
            exchange.label = getattr(self._local, "label", None)
        with self._lock:
            if len(self._items) >= self._limit:
                self.dropped += 1
            else:
                self._items.append(exchange)
        return exchange

    def all(self) -> list[Exchange]:
        with self._lock:
            return list(self._items)

    def for_node(self, nodeid: str) -> list[Exchange]:
        with self._lock:
            return [e for e in self._items if e.nodeid == nodeid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
