"""The API service's key-authentication middleware, as the platform's ``src/middleware/auth.py``.

Contract sections 2.3 (what is sent to the auth service and read back), 2.4 (status mapping,
HEAD column), 3 (key extraction, unauthenticated paths) and 4 (write scopes, registry admin).
It is a pure ASGI middleware, so request bodies stay unread streams for the proxy behind it.

Fault switches read on every request: ``wrong-service-id`` (validate as ``ml-platform``),
``auth-bypass`` (never validate), ``revocation-delay`` (cache successes for an hour) and
``registry-admin`` (the HEAD registry lock-down, same as ``policy="registry-admin"``).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .api_state import ApiRuntime, Principal, ValidationCache

__all__ = [
    "ADMIN_SCOPES",
    "PUBLIC_PATH_PREFIXES",
    "REGISTRY_ADMIN_BODY",
    "REGISTRY_PATH_PREFIXES",
    "WRITE_SCOPES",
    "AuthMiddleware",
    "Principal",
    "ValidationCache",
    "extract_key",
    "forbidden_body",
    "is_mlflow_write",
    "is_registry_admin",
    "is_registry_path",
]

log = logging.getLogger("pytest_hokusai.stack.api")

#: Path prefixes served without a key (contract section 3), plus the stack's control endpoints.
PUBLIC_PATH_PREFIXES = (
    "/health", "/ready", "/live", "/version", "/metrics", "/docs", "/openapi.json", "/redoc",
    "/favicon.ico", "/api/v1/dspy/health", "/api/health/mlflow", "/_stack",
)
#: Any one of these scopes allows an MLflow write (contract section 4).
WRITE_SCOPES = frozenset({
    "model:write", "mlflow:write", "mlflow:access", "admin", "mlflow:admin", "write", "full_access",
})
#: Scopes or roles that make a principal a registry admin (``REGISTRY_ADMIN_SCOPES`` default).
ADMIN_SCOPES = frozenset({"admin", "mlflow:admin", "registry:admin", "model-registry:admin"})
#: Paths the HEAD registry lock-down covers (contract section 4, "Registry admin").
REGISTRY_PATH_PREFIXES = (
    "/mlflow", "/api/mlflow", "/api/2.0/mlflow", "/api/2.0/preview/mlflow", "/api/2.0/mlflow-artifacts",
    "/ajax-api/2.0/mlflow", "/ajax-api/2.0/mlflow-artifacts",
)
_WRITE_PATTERNS = tuple(
    [f"/mlflow/runs/{op}" for op in ("create", "update", "delete", "restore", "log-metric",
                                      "log-parameter", "log-batch", "set-tag", "delete-tag")]
    + [f"/mlflow/experiments/{op}" for op in ("create", "update", "delete", "restore",
                                               "set-experiment-tag")]
    + [f"/mlflow/registered-models/{op}" for op in ("create", "update", "delete", "rename", "set-tag",
                                                     "delete-tag")]
    + [f"/mlflow/model-versions/{op}" for op in ("create", "update", "delete", "set-tag", "delete-tag",
                                                  "transition-stage")]
    + ["/mlflow-artifacts/"]
)
_READ_MARKERS = ("/search", "/get", "/list", "/download", "/get-by-name")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REVOCATION_DELAY_TTL_S = 3600.0
_WRONG_SERVICE_ID = "ml-platform"


def extract_key(headers: Headers, query: QueryParams) -> str | None:
    """The key by the real middleware's order: Bearer, ApiKey, X-API-Key, ``?api_key=``.

    Schemes are case-sensitive and the key is not trimmed; an empty value counts as no key.
    """
    auth = headers.get("authorization")
    if auth:
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):] or None
        if auth.startswith("ApiKey "):
            return auth[len("ApiKey "):] or None
    return headers.get("x-api-key") or query.get("api_key") or None


def is_mlflow_write(method: str, path: str) -> bool:
    """Contract section 4 "Write detection": a write pattern, or a mutating method on /mlflow/."""
    lowered = path.lower()
    if any(pattern in lowered for pattern in _WRITE_PATTERNS):
        return True
    return (
        method.upper() in _WRITE_METHODS
        and "/mlflow/" in lowered
        and not any(marker in lowered for marker in _READ_MARKERS)
    )


def is_registry_path(path: str) -> bool:
    """True for paths the HEAD registry lock-down covers (prefix match, as the real code)."""
    return path.startswith(REGISTRY_PATH_PREFIXES)


def is_registry_admin(principal: Principal) -> bool:
    """``is_admin``, or scopes ∪ roles meeting :data:`ADMIN_SCOPES`."""
    return principal.is_admin or bool(ADMIN_SCOPES.intersection(principal.scopes + principal.roles))


def forbidden_body(scopes: tuple[str, ...]) -> dict[str, Any]:
    """The 403 FORBIDDEN body for an MLflow write without a write scope (contract section 4)."""
    current = list(scopes)
    return {
        "detail": "Insufficient permissions for this operation",
        "error": "FORBIDDEN",
        "message": (
            f"This operation requires write permissions. Your API key has scopes: {current}. "
            "Required: 'model:write' or 'mlflow:write'"
        ),
        "required_scope": "model:write or mlflow:write",
        "current_scopes": current,
    }


REGISTRY_ADMIN_BODY = {
    "detail": "Admin access required for the model registry",
    "error": "REGISTRY_ADMIN_REQUIRED",
}


def _client_ip(scope: Scope, headers: Headers) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    client = scope.get("client")
    return str(client[0]) if client else None


class _AuthFailure(Exception):
    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=headers)


class AuthMiddleware:
    """ASGI middleware: key extraction, validation (cached), then the billing/scope/admin policy.

    On success it sets ``request.state`` fields ``authenticated``, ``user_id``, ``api_key_id``,
    ``scopes``, ``is_admin`` for the routes (the proxy adds the X-Hokusai-* headers from them).
    """

    def __init__(self, app: ASGIApp, runtime: ApiRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        state: dict[str, Any] = scope.setdefault("state", {})
        faults = self.runtime.faults
        if method == "OPTIONS" or path.startswith(PUBLIC_PATH_PREFIXES):
            await self.app(scope, receive, send)
            return
        if "auth-bypass" in faults:
            state.update(authenticated=False, user_id="anonymous", api_key_id=None, scopes=[], is_admin=False)
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = extract_key(headers, QueryParams(scope.get("query_string", b"")))
        if key is None:
            await JSONResponse({"detail": "API key required"}, status_code=401)(scope, receive, send)
            return
        try:
            principal = await self._principal(key, _client_ip(scope, headers))
        except _AuthFailure as failure:
            await failure.response()(scope, receive, send)
            return
        denial = self._policy(method, path, principal)
        if denial is not None:
            await denial(scope, receive, send)
            return
        state.update(
            authenticated=True, user_id=principal.user_id, api_key_id=principal.key_id,
            scopes=list(principal.scopes), is_admin=is_registry_admin(principal),
        )
        await self.app(scope, receive, send)

    def _service_id(self) -> str:
        if "wrong-service-id" in self.runtime.faults:
            return _WRONG_SERVICE_ID
        return self.runtime.config.service_id

    def _cache_ttl(self) -> float:
        if "revocation-delay" in self.runtime.faults:
            return _REVOCATION_DELAY_TTL_S
        return float(self.runtime.config.cache_ttl)

    async def _principal(self, key: str, client_ip: str | None) -> Principal:
        runtime = self.runtime
        service_id = self._service_id()
        ttl = self._cache_ttl()
        cached = runtime.cache.get(key, service_id, ttl)
        if cached is not None:
            runtime.stats["auth_cache_hits"] += 1
            return cached
        body: dict[str, Any] = {"service_id": service_id}
        if client_ip:
            body["client_ip"] = client_ip
        runtime.stats["auth_calls"] += 1
        try:
            response = await runtime.auth_client.post(
                f"{runtime.config.auth_url.rstrip('/')}/api/v1/keys/validate",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=runtime.config.auth_timeout,
            )
        except httpx.TimeoutException:
            log.warning("auth service timeout after %.1fs", runtime.config.auth_timeout)
            raise _AuthFailure(503, "Authentication service timeout", 1) from None
        except Exception as exc:  # noqa: BLE001 - refused, DNS, protocol errors: all "unavailable"
            log.warning("auth service unavailable: %s", type(exc).__name__)
            raise _AuthFailure(503, "Authentication service unavailable", 1) from None
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise _AuthFailure(401, "Authentication service error")
            principal = Principal.from_validation(data)  # is_valid is not checked (contract F30)
            runtime.cache.put(key, service_id, ttl, principal)
            return principal
        if response.status_code == 401:
            raise _AuthFailure(401, "Invalid or expired API key")
        if response.status_code == 429:
            raise _AuthFailure(429, "Rate limit exceeded", 60)
        log.warning("auth service answered %d", response.status_code)
        raise _AuthFailure(503, "Authentication service error", 1)

    def _policy(self, method: str, path: str, principal: Principal) -> JSONResponse | None:
        """Registry admin (HEAD, registry paths), else billing 402, else the write-scope 403."""
        runtime = self.runtime
        registry_admin = runtime.config.policy == "registry-admin" or "registry-admin" in runtime.faults
        if registry_admin and is_registry_path(path):
            if is_registry_admin(principal):
                return None  # HEAD skips billing and write-scope checks on registry paths
            return JSONResponse(REGISTRY_ADMIN_BODY, status_code=403)
        if not principal.has_sufficient_balance:
            return JSONResponse({"detail": "Insufficient balance"}, status_code=402)
        if (
            runtime.config.policy == "write-scope"
            and is_mlflow_write(method, path)
            and not WRITE_SCOPES.intersection(principal.scopes)
        ):
            return JSONResponse(forbidden_body(principal.scopes), status_code=403)
        return None
