"""The proxy's upstream connection pool: httpcore directly, without httpx's client layer.

The proxy relays raw header pairs and raw bytes, so httpx's per-request work (URL parsing and
normalising, header models, a cookie jar that a proxy must not keep anyway, redirect and auth
flows) was pure cost on the second HTTP hop. :class:`UpstreamPool` sends the request the way the
httpx client did (same headers, ``Host`` from the URL unless one is given, chunked framing for a
body of unknown length, ``Content-Length: 0`` for an empty POST/PUT/PATCH, the same timeout) and
raises httpx's exception types (:class:`httpx.TimeoutException`, :class:`httpx.ConnectError`), so
the proxy's status mapping is unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

__all__ = ["RawUpstreamResponse", "UpstreamPool"]

_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RawUpstreamResponse:
    """An open upstream answer: ``status_code``, ``headers`` (``.raw``, ``.get``), ``aiter_raw()``, ``aclose()``."""

    def __init__(self, response: httpcore.Response) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = httpx.Headers(response.headers)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        stream: Any = self._response.stream
        try:
            async for chunk in stream:
                yield chunk
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class UpstreamPool:
    """A pooled HTTP/1.1 client for one upstream base URL set per request (keep-alive, bounded)."""

    def __init__(self, timeout: float, *, max_connections: int = 100, max_keepalive: int = 20) -> None:
        self._pool = httpcore.AsyncConnectionPool(max_connections=max_connections,
                                                  max_keepalive_connections=max_keepalive)
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}

    async def open(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   body: AsyncIterator[bytes] | None) -> RawUpstreamResponse:
        """Send the request and return once the status and headers are in (the body is streamed)."""
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        sent = list(headers)
        names = {name.lower() for name, _ in sent}
        if b"host" not in names:
            sent.insert(0, (b"host", parts.netloc.encode("ascii")))
        if body is not None and b"content-length" not in names:
            sent.append((b"transfer-encoding", b"chunked"))
        elif body is None and method in _EMPTY_BODY_METHODS and b"content-length" not in names:
            sent.append((b"content-length", b"0"))
        request = httpcore.Request(
            method.encode("ascii"),
            httpcore.URL(scheme=parts.scheme.encode("ascii"), host=(parts.hostname or "").encode("ascii"),
                         port=parts.port, target=target.encode("latin-1")),
            headers=sent, content=body, extensions={"timeout": self._timeouts},
        )
        try:
            response = await self._pool.handle_async_request(request)
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc)) from exc
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except httpcore.NetworkError as exc:
            raise httpx.NetworkError(str(exc)) from exc
        return RawUpstreamResponse(response)

    async def aclose(self) -> None:
        await self._pool.aclose()
