"""The proxy's upstream client: HTTP/1.1 over pooled asyncio streams, parsed by httptools.

The proxy relays raw header pairs and raw body bytes, so a general-purpose client's per-request
work is pure cost on the second HTTP hop. httpcore (pure-Python h11 parsing) was about half of
the API service's CPU per proxied request and ~0.9 ms of client CPU per small GET; this client,
with the C parser uvicorn already uses (httptools, llhttp), spends ~0.1 ms (bench/RESULTS.md,
``proxy``). :class:`UpstreamPool` sends what the httpx/httpcore client sent (the given headers,
``Host`` from the URL unless one is given, chunked framing for a body of unknown length,
``Content-Length: 0`` for an empty POST/PUT/PATCH) and raises httpx's exception types
(:class:`httpx.ConnectError`, :class:`httpx.TimeoutException` and its subclasses,
:class:`httpx.ReadError`, :class:`httpx.RemoteProtocolError`), so the proxy's status mapping is
unchanged.

Connections are kept alive and reused one request at a time. An idle connection the server has
closed (MLflow's uvicorn drops idle keep-alives after 5 s) is noticed before reuse (readable
socket = EOF or stray bytes) and, if the server closes it just as a request without a body goes
out, that request is sent once more on a new connection, as httpcore's pool did.
"""

from __future__ import annotations

import asyncio
import select
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import httptools
import httpx

__all__ = ["RawUpstreamResponse", "UpstreamPool"]

_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@asynccontextmanager
async def _anyio_deadline(seconds: float) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


# A deadline per read, write and connect (both raise the builtin TimeoutError). asyncio's own
# (3.11+) costs a timer handle; anyio's cancel scope cost ~15 % of the proxy's CPU per request.
_deadline: Callable[[float], AbstractAsyncContextManager[Any]] = (
    getattr(asyncio, "timeout") if sys.version_info >= (3, 11) else _anyio_deadline)  # noqa: B009 - 3.10 stubs lack it
_READ_SIZE = 256 * 1024


class _Connection:
    __slots__ = ("key", "reader", "used", "writer")

    def __init__(self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key, self.reader, self.writer = key, reader, writer
        self.used = False  #: it carried a request before (the server may have closed it since)

    def idle_and_open(self) -> bool:
        """True while the server has neither closed nor written to this idle connection."""
        if self.writer.is_closing() or self.reader.at_eof():
            return False
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class _Events:
    """httptools callbacks: the status line's headers, body chunks, completion."""

    __slots__ = ("chunks", "complete", "head_done", "headers", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        # Read now: once the message is complete the parser has reset and says False. Then let
        # go of the parser, which holds these callbacks (no reference cycle per request).
        self.keep_alive = bool(self.parser.should_keep_alive())
        self.parser = None

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Disconnected(Exception):
    """The server closed a reused connection before answering (safe to send again)."""


class RawUpstreamResponse:
    """An open upstream answer: ``status_code``, ``headers`` (``.raw``, ``.get``), ``aiter_raw()``, ``aclose()``."""

    def __init__(self, pool: UpstreamPool, conn: _Connection, parser: Any, events: _Events, *, head: bool) -> None:
        self._pool, self._conn, self._parser, self._events = pool, conn, parser, events
        self.status_code: int = parser.get_status_code()
        self.headers = httpx.Headers(events.headers)
        # A HEAD answer has no body whatever its Content-Length says (httptools cannot be told).
        self._no_body = head or self.status_code in (204, 304) or 100 <= self.status_code < 200
        self._until_eof = not self._no_body and "content-length" not in self.headers \
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        self._finished = self._no_body or events.complete
        self._closed = False

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as sent (chunked framing removed, content encoding kept), read as it arrives."""
        events = self._events
        while True:
            while events.chunks:
                yield events.chunks.popleft()
            if self._finished or events.complete:
                self._finished = True
                return
            data = await self._pool.read(self._conn)
            if not data:
                if self._until_eof:  # a body delimited by the end of the connection
                    self._finished = True
                    return
                raise httpx.ReadError("the upstream server closed the connection before the body was complete")
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"invalid HTTP from upstream: {exc}") from exc

    async def aclose(self) -> None:
        """Release the connection for reuse if the answer was read whole and may be kept; else close it."""
        if self._closed:
            return
        self._closed = True
        # After a HEAD the parser still expects the body its headers announced (not complete): never reuse.
        reusable = self._finished and self._events.complete and self._events.keep_alive
        self._pool.release(self._conn, reusable=reusable)


class UpstreamPool:
    """Pooled HTTP/1.1 connections to the upstreams named by each request's URL (keep-alive, bounded)."""

    def __init__(self, timeout: float, *, max_connections: int = 100, max_keepalive: int = 20) -> None:
        self._timeout = timeout
        self._max_keepalive = max_keepalive
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def open(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   body: AsyncIterator[bytes] | None) -> RawUpstreamResponse:
        """Send the request and return once the status and headers are in (the body is streamed)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme != "http":
            raise httpx.UnsupportedProtocol(f"the stack's proxy speaks plain http only, not {parts.scheme}://")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        names = {name.lower() for name, _ in headers}
        chunked = body is not None and b"content-length" not in names
        head = _request_head(method, target, parts.netloc, headers, names, has_body=body is not None, chunked=chunked)
        for attempt in (1, 2):
            conn = await self._connect((host, port), fresh=attempt == 2)
            try:
                return await self._exchange(conn, method, head, body, chunked=chunked)
            except _Disconnected:
                self.release(conn, reusable=False)
                if attempt == 2 or body is not None:
                    raise httpx.RemoteProtocolError("the upstream server closed the connection without "
                                                    "answering") from None
            except BaseException:
                self.release(conn, reusable=False)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, conn: _Connection) -> bytes:
        try:
            async with _deadline(self._timeout):
                return await conn.reader.read(_READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no data from the upstream server for {self._timeout:g} s") from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if conn not in self._busy:
            return
        self._busy.discard(conn)
        if self._slots is not None:
            self._slots.release()
        idle = self._idle.setdefault(conn.key, [])
        if reusable and len(idle) < self._max_keepalive:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()

    # -- internals ---------------------------------------------------------------------------------
    async def _connect(self, key: tuple[str, int], *, fresh: bool) -> _Connection:
        if self._slots is not None:
            try:
                async with _deadline(self._timeout):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout(f"no free upstream connection within {self._timeout:g} s") from exc
        try:
            idle = self._idle.get(key, [])
            while idle and not fresh:
                conn = idle.pop()
                if conn.idle_and_open():
                    self._busy.add(conn)
                    return conn
                conn.close()
            try:
                async with _deadline(self._timeout):
                    reader, writer = await asyncio.open_connection(key[0], key[1], limit=_READ_SIZE)
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(f"no connection to {key[0]}:{key[1]} within {self._timeout:g} s") from exc
            except OSError as exc:
                raise httpx.ConnectError(f"{key[0]}:{key[1]}: {exc.strerror or exc}") from exc
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        conn = _Connection(key, reader, writer)
        self._busy.add(conn)
        return conn

    async def _exchange(self, conn: _Connection, method: str, head: bytes,
                        body: AsyncIterator[bytes] | None, *, chunked: bool) -> RawUpstreamResponse:
        events = _Events()
        parser = events.parser = httptools.HttpResponseParser(events)
        reused, conn.used = conn.used, True
        try:
            await self._send(conn, head, body, chunked=chunked)
        except (httpx.WriteError, httpx.WriteTimeout):
            # The server may have answered (and closed) before taking the whole body: relay that
            # answer if there is one, as httpcore did. A reused connection that was simply closed
            # under us is sent again (without a body only; see open()).
            if not await self._read_head(conn, parser, events, quiet=True):
                if reused:
                    raise _Disconnected from None
                raise
        else:
            if not await self._read_head(conn, parser, events, quiet=reused):
                raise _Disconnected
        return RawUpstreamResponse(self, conn, parser, events, head=method == "HEAD")

    async def _send(self, conn: _Connection, head: bytes, body: AsyncIterator[bytes] | None, *,
                    chunked: bool) -> None:
        writer = conn.writer
        try:
            writer.write(head)
            if body is not None:
                async for chunk in body:
                    if chunk:
                        writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                        async with _deadline(self._timeout):
                            await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
            async with _deadline(self._timeout):
                await writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout(f"the upstream server took no data for {self._timeout:g} s") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    async def _read_head(self, conn: _Connection, parser: Any, events: _Events, *, quiet: bool) -> bool:
        """Feed the parser until the status and headers are in. If the connection ends first (or,
        ``quiet``, fails to read): False when ``quiet``, else httpx's error."""
        while not events.head_done:
            try:
                data = await self.read(conn)
            except (httpx.ReadError, httpx.ReadTimeout):
                if quiet:
                    return False
                raise
            if not data:
                if quiet:
                    return False
                raise httpx.RemoteProtocolError("the upstream server closed the connection without answering")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"invalid HTTP from upstream: {exc}") from exc
        return True


def _request_head(method: str, target: str, netloc: str, headers: list[tuple[bytes, bytes]], names: set[bytes], *,
                  has_body: bool, chunked: bool) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target.encode("latin-1"))]
    if b"host" not in names:
        lines.append(b"host: " + netloc.encode("ascii"))
    lines.extend(name + b": " + value for name, value in headers)
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    elif not has_body and method in _EMPTY_BODY_METHODS and b"content-length" not in names:
        lines.append(b"content-length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"
