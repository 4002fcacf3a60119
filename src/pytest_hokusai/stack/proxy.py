"""The streaming MLflow reverse proxy of the API service (contract section 5) and the balancer's
direct ``/mlflow`` route, sharing one forwarding path.

Bodies are streamed both ways and never held whole: the request body goes upstream as the
client's ASGI stream (with the client's Content-Length when it sent one, chunked otherwise) and
the response comes back from ``aiter_raw`` (no decoding, so Content-Encoding and Content-Length
stay valid). Hop-by-hop headers (RFC 9110 section 7.6.1, plus any named in ``Connection``) are
dropped in both directions. Unlike the real proxy, DELETE bodies and repeated query keys survive
(the contract records both losses as defects of the real one); the ``drop-delete-body`` fault
switches the real body rule on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .api_state import ApiRuntime
from .middleware import extract_key
from .upstream import RawUpstreamResponse

__all__ = [
    "HOP_BY_HOP",
    "REGISTRY_HOST",
    "UpstreamResponse",
    "alb_page",
    "balancer_not_found",
    "filter_headers",
    "gateway_denies",
    "proxy_direct",
    "proxy_mount",
    "translate_path",
]

log = logging.getLogger("pytest_hokusai.stack.api")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})
#: The public host; the ajax-api translation applies only when the upstream URL contains it.
REGISTRY_HOST = "registry.hokus.ai"
_IDENTITY_HEADERS = frozenset({"x-hokusai-user-id", "x-hokusai-api-key-id"})
_AUTH_HEADERS = frozenset({"authorization", "x-api-key"})
_GATEWAY_HEALTH_PATHS = ("/health", "/mlflow/health")
#: The only methods whose body the real proxy forwards (the drop-delete-body fault).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: MLflow's static prefix on the platform (the public ``/mlflow`` URL).
STATIC_PREFIX = "/mlflow"
_ALB_TITLES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def alb_page(status: int) -> HTMLResponse:
    """The HTML error page an AWS ALB answers with when its target is down or slow."""
    title = _ALB_TITLES[status]
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
    return HTMLResponse(body, status_code=status, headers={"Server": "awselb/2.0"})


def filter_headers(
    raw: Iterable[tuple[bytes, bytes]], drop: Iterable[str] = ()
) -> list[tuple[bytes, bytes]]:
    """``raw`` without hop-by-hop headers, headers named in ``Connection``, and ``drop``."""
    pairs = list(raw)
    dropped = set(HOP_BY_HOP).union(d.lower() for d in drop)
    for name, value in pairs:
        if name.lower() == b"connection":
            dropped.update(t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip())
    return [(n, v) for n, v in pairs if n.decode("latin-1").lower() not in dropped]


def translate_path(path: str, base: str) -> str:
    """The proxy's ajax-api rewrite: only when ``base`` contains ``registry.hokus.ai``."""
    if REGISTRY_HOST in base:
        for rest_prefix in ("api/2.0/mlflow/", "api/2.0/mlflow-artifacts/"):
            if path.startswith(rest_prefix):
                return "ajax-" + path
    return path


def gateway_denies(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """The MLflow-side admin gateway's key check (contract 2.5): no Bearer/ApiKey/X-API-Key.

    The gateway ignores ``?api_key=``; health paths and OPTIONS pass.
    """
    if method == "OPTIONS" or path in _GATEWAY_HEALTH_PATHS:
        return False
    return extract_key(Headers(raw=list(headers)), QueryParams("")) is None


#: Answers with a Content-Length up to this size are relayed in one piece (see UpstreamResponse).
SMALL_BODY_BYTES = 64 * 1024


def _small_length(raw_headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length if it is at most SMALL_BODY_BYTES (None: unknown, or stream it)."""
    for name, value in raw_headers:
        if name.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if 0 <= length <= SMALL_BODY_BYTES else None
    return None


class UpstreamResponse(Response):
    """Relay an open httpx response to the client, closing it whatever happens.

    Bodies are streamed chunk by chunk; only an answer whose Content-Length is at most
    ``SMALL_BODY_BYTES`` (MLflow's JSON answers) is read first and sent as one ASGI body message,
    which spares the streaming machinery (a task group per response, one write per chunk) on the
    proxy's most common requests. Large or unsized bodies are never held whole.
    """

    def __init__(self, upstream: RawUpstreamResponse, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if _small_length(self.raw_headers) is not None:
                body = b"".join([chunk async for chunk in self.upstream.aiter_raw()])
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": body})
                return
            inner = StreamingResponse(self.upstream.aiter_raw(), status_code=self.status_code)
            inner.raw_headers = self.raw_headers
            await inner(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _raw_remainder(scope: Scope, mount: str, path: str) -> str:
    """The still-encoded path after ``mount/``, so %2F and friends reach MLflow as sent."""
    raw: bytes = scope.get("raw_path") or b""
    prefix = (mount + "/").encode("ascii")
    if raw.startswith(prefix):
        return raw[len(prefix):].decode("latin-1")
    return quote(path, safe="/:@!$&'()*+,;=-._~")


def _url(base: str, path: str, query: bytes) -> str:
    url = f"{base.rstrip('/')}/{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url


async def _open(
    runtime: ApiRuntime, request: Request, url: str, headers: list[tuple[bytes, bytes]], *, with_body: bool = True
) -> RawUpstreamResponse:
    body = _body(request) if with_body and _has_body(request.scope["headers"]) else None
    return await runtime.upstream_pool.open(request.method, url, headers, body)


async def proxy_mount(runtime: ApiRuntime, request: Request, mount: str, path: str) -> Response:
    """The API's proxy route ``{mount}/{path}``: faults, forwarding, error mapping (section 5)."""
    faults = runtime.faults
    config = runtime.config
    if mount == "/api/mlflow" and "route-not-mounted" in faults:
        return JSONResponse({"detail": "Not Found"}, status_code=404)  # FastAPI's own 404
    raw_path = _raw_remainder(request.scope, mount, path)
    stripped = "api/2.0/mlflow/"
    if mount == "/api/mlflow" and "mlflow-path-mismatch" in faults and path.startswith(stripped):
        path = path[len(stripped):]
        raw_path = raw_path.removeprefix(stripped)
    if "artifacts-disabled" in faults and "mlflow-artifacts" in path:
        return JSONResponse({"detail": {
            "error": "ARTIFACTS_DISABLED",
            "message": "Artifact storage is not configured. Please contact your administrator.",
        }}, status_code=503)
    base = config.unreachable_url if "mlflow-unreachable" in faults else config.mlflow_url
    upstream_path = translate_path(raw_path, base)
    # F11 (2025-07-22): aimed at the public /mlflow URL, the proxy translated api/2.0/mlflow/ but not
    # api/2.0/mlflow-artifacts/, and passed MLflow's HTML 404 through (the JSON conversion came later).
    untranslated = "artifact-path-untranslated" in faults and raw_path.startswith("api/2.0/mlflow-artifacts/")
    if untranslated:
        base, upstream_path = base.rstrip("/") + STATIC_PREFIX, raw_path
    # Every real proxy forwards a body only for POST, PUT and PATCH (contract section 5).
    drop_body = "drop-delete-body" in faults and request.method not in _BODY_METHODS
    drop = {"host", "expect", *_IDENTITY_HEADERS}
    if drop_body:
        drop |= {"content-length", "transfer-encoding"}
    if "strip-auth" in faults:
        drop |= _AUTH_HEADERS
    headers = filter_headers(request.scope["headers"], drop)
    state: dict[str, Any] = request.scope.get("state", {})
    if state.get("authenticated"):
        if state.get("user_id") is not None:
            headers.append((b"x-hokusai-user-id", str(state["user_id"]).encode("latin-1")))
        if state.get("api_key_id") is not None:
            headers.append((b"x-hokusai-api-key-id", str(state["api_key_id"]).encode("latin-1")))
    if "host-header" in faults:
        headers.insert(0, (b"host", REGISTRY_HOST.encode("ascii")))
    if "strip-auth" in faults and gateway_denies(request.method, "/" + upstream_path, headers):
        return JSONResponse({"detail": "API key required"}, status_code=401)  # the MLflow-side gateway
    runtime.stats["proxied_requests"] += 1
    try:
        upstream = await _open(runtime, request, _url(base, upstream_path, request.scope["query_string"]),
                               headers, with_body=not drop_body)
    except httpx.TimeoutException:
        runtime.stats["upstream_errors"] += 1
        return JSONResponse({"detail": f"MLflow server request timeout after {float(config.upstream_timeout)}s"},
                            status_code=504)
    except httpx.ConnectError:
        runtime.stats["upstream_errors"] += 1
        return JSONResponse({"detail": f"Failed to connect to MLflow server at {base}"}, status_code=502)
    except Exception:
        runtime.stats["upstream_errors"] += 1
        log.exception("proxy error on %s %s/%s", request.method, mount, path)
        return JSONResponse({"detail": "Internal server error while proxying to MLflow"}, status_code=500)
    if upstream.status_code == 404 and "text/html" in upstream.headers.get("content-type", "") and not untranslated:
        await upstream.aclose()
        return JSONResponse({
            "error_code": "RESOURCE_NOT_FOUND",
            "message": f"The requested resource was not found: {path}",
        }, status_code=404)
    return UpstreamResponse(upstream, filter_headers(upstream.headers.raw))


async def proxy_direct(runtime: ApiRuntime, scope: Scope, receive: Receive) -> Response:
    """The balancer's ``/mlflow`` route: straight to MLflow, path and query unchanged, no auth.

    With ``strip-auth`` on, the MLflow-side admin gateway is emulated: no key, 401.
    Upstream failures look like the ALB's (HTML 502/504).
    """
    request = Request(scope, receive)
    headers = filter_headers(scope["headers"], {"host", "expect"})
    if "strip-auth" in runtime.faults and gateway_denies(request.method, scope["path"], headers):
        return JSONResponse({"detail": "API key required"}, status_code=401)
    raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
    root = runtime.config.mlflow_root_url or runtime.config.mlflow_url
    url = _url(root, raw_path.decode("latin-1").lstrip("/"), scope["query_string"])
    runtime.stats["direct_mlflow_requests"] += 1
    try:
        upstream = await _open(runtime, request, url, headers)
    except httpx.TimeoutException:
        runtime.stats["upstream_errors"] += 1
        return alb_page(504)
    except Exception as exc:  # noqa: BLE001 - the ALB answers 502 for any target failure
        runtime.stats["upstream_errors"] += 1
        log.warning("direct /mlflow route: %s", type(exc).__name__)
        return alb_page(502)
    return UpstreamResponse(upstream, filter_headers(upstream.headers.raw))


def balancer_not_found() -> PlainTextResponse:
    """The ALB's default action when no rule matches (F8, F10)."""
    return PlainTextResponse("Not Found", status_code=404, headers={"Server": "awselb/2.0"})
