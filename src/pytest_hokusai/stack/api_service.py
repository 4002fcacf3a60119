"""The stack's API service: a load-balancer layer, the platform's auth middleware and its
streaming MLflow proxy, in one ASGI app built by :func:`create_app`.

Layers, outermost first (contract sections 1, 2.3-2.5, 3-5):

A. **Balancer** (models the ALB). ``/mlflow`` and ``/mlflow/*`` go straight to MLflow, path
   unchanged and unauthenticated. Everything else goes to the API app. Faults: ``api-down``
   (HTML 503 on every path but ``/mlflow*`` and ``/_stack/*``), ``route-not-configured``
   (text/plain 404 on ``/api/mlflow*``).
B. **API app** (FastAPI): ``GET /health``, ``GET /api/health/mlflow`` and the stack-control
   endpoints under ``/_stack`` (header ``X-Hokusai-Stack-Token: <admin token>``, else 403):

   - ``GET /_stack/faults`` -> ``{"faults": [...], "effective": [...]}`` (``effective``: the
     ones this service acts on);
   - ``PUT /_stack/faults`` with ``{"faults": [...]}`` -> same shape; unknown names -> 422
     ``{"detail": "unknown fault switch(es): ..."}``. It also empties the validation cache, so
     the next request re-validates under the new faults (the auth service's too);
   - ``GET /_stack/stats`` -> counters (``auth_calls``, ``auth_cache_hits``, ``cache_size``,
     ``proxied_requests``, ``direct_mlflow_requests``, ``upstream_errors``) plus faults and
     the effective policy/cache TTL;
   - ``DELETE /_stack/cache`` -> ``{"cleared": n}``.
C. **Auth middleware** (:mod:`.middleware`).
D. **MLflow proxy** (:mod:`.proxy`) at ``/api/mlflow/{path}`` and ``/api/2.0/mlflow/{path}``.

Two pooled ``httpx.AsyncClient`` objects (auth, upstream) live for the app's lifespan.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .api_state import API_FAULTS, ApiRuntime
from .config import POLICIES, STACK_TOKEN_HEADER, ApiServiceConfig, load_service_config
from .events import add_event_routes
from .faults import check_faults
from .middleware import AuthMiddleware
from .proxy import REGISTRY_HOST, alb_page, balancer_not_found, proxy_direct, proxy_mount

__all__ = ["API_FAULTS", "PROXY_METHODS", "ApiRuntime", "ApiService", "app_from_env", "create_app"]

log = logging.getLogger("pytest_hokusai.stack.api")

PROXY_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
PROXY_MOUNTS = ("/api/mlflow", "/api/2.0/mlflow")
_PROBE_TIMEOUT_S = 5.0


class FaultSet(BaseModel):
    """Body of ``PUT /_stack/faults``."""

    faults: list[str]


class ApiService:
    """The balancer layer (ASGI callable); ``api`` is the FastAPI app behind it."""

    def __init__(self, runtime: ApiRuntime, api: FastAPI) -> None:
        from .fastpath import ProxyFastPath

        self.runtime = runtime
        self.api = api
        #: the proxy mounts without FastAPI's router (same layers, same answers; see fastpath.py)
        self.fast_path = ProxyFastPath(runtime, PROXY_MOUNTS, frozenset(PROXY_METHODS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/mlflow" or path.startswith("/mlflow/"):
                response = await proxy_direct(self.runtime, scope, receive)
                await response(scope, receive, send)
                return
            if path != "/_stack" and not path.startswith("/_stack/"):
                faults = self.runtime.faults
                if "api-down" in faults:
                    await alb_page(503)(scope, receive, send)
                    return
                if "route-not-configured" in faults and (path == "/api/mlflow" or path.startswith("/api/mlflow/")):
                    await balancer_not_found()(scope, receive, send)
                    return
                proxied = self.fast_path.app_for(scope)
                if proxied is not None:
                    await proxied(scope, receive, send)
                    return
        await self.api(scope, receive, send)


async def _mlflow_probe(runtime: ApiRuntime) -> JSONResponse:
    """``GET /api/health/mlflow``: one registered-models search against the proxy's upstream."""
    faults = runtime.faults
    base = runtime.config.unreachable_url if "mlflow-unreachable" in faults else runtime.config.mlflow_url
    started = time.monotonic()

    def answer(status: int, **fields: Any) -> JSONResponse:
        latency = round((time.monotonic() - started) * 1000, 1)
        return JSONResponse({"status": "ok" if status == 200 else "error", "tracking_uri": base,
                             "latency_ms": latency, **fields}, status_code=status)

    if "strip-auth" in faults:  # the API's own client carries no key either; the gateway says 401
        return answer(503, error_type="HTTPError", error='HTTP 401: {"detail":"API key required"}')
    headers = {"Host": REGISTRY_HOST} if "host-header" in faults else {}
    url = f"{base.rstrip('/')}/api/2.0/mlflow/registered-models/search"
    try:
        response = await runtime.upstream_client.get(
            url, params={"max_results": "1"}, headers=headers, timeout=_PROBE_TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - the probe reports any failure as its error_type
        return answer(503, error_type=type(exc).__name__, error=str(exc) or type(exc).__name__)
    if response.status_code != 200:
        return answer(503, error_type="HTTPError", error=f"HTTP {response.status_code}: {response.text[:300]}")
    try:
        models = response.json().get("registered_models") or []
    except (ValueError, AttributeError) as exc:
        return answer(503, error_type=type(exc).__name__, error="MLflow answered 200 with a non-JSON body")
    sample = models[0].get("name") if models and isinstance(models[0], dict) else None
    return answer(200, sample_model=sample)


def create_app(config: ApiServiceConfig) -> ApiService:
    """Build the API service for ``config`` (an ASGI app; run it with lifespan on).

    Raises ValueError for an unknown policy or fault name.
    """
    if config.policy not in POLICIES:
        raise ValueError(f"unknown policy {config.policy!r}; known: {', '.join(POLICIES)}")
    runtime = ApiRuntime(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="Hokusai API (local reference stack)", version="1.0.0", lifespan=lifespan)
    app.add_middleware(AuthMiddleware, runtime=runtime)

    def require_stack_token(request: Request) -> None:
        given = request.headers.get(STACK_TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), config.admin_token.encode()):
            raise HTTPException(status_code=403, detail=f"{STACK_TOKEN_HEADER} header missing or wrong")

    token = [Depends(require_stack_token)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "healthy", "version": "1.0.0",
            "services": {"api": "healthy", "dependency_checks": "skipped"},
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }

    async def mlflow_health() -> JSONResponse:
        return await _mlflow_probe(runtime)

    for probe_path in ("/api/health/mlflow", "/api/health/mlflow/detailed", "/api/health/mlflow/connectivity"):
        app.add_api_route(probe_path, mlflow_health, methods=["GET"])

    @app.get("/_stack/faults", include_in_schema=False, dependencies=token)
    async def get_faults() -> dict[str, Any]:
        return runtime.faults_body()

    @app.put("/_stack/faults", include_in_schema=False, dependencies=token)
    async def put_faults(body: FaultSet) -> JSONResponse:
        try:
            names = check_faults(body.faults)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        runtime.faults = set(names)
        runtime.cache.clear()
        log.info("faults set to %s", ", ".join(names) or "(none)")
        return JSONResponse(runtime.faults_body())

    @app.get("/_stack/stats", include_in_schema=False, dependencies=token)
    async def get_stats() -> dict[str, Any]:
        return runtime.stats_body()

    @app.delete("/_stack/cache", include_in_schema=False, dependencies=token)
    async def clear_cache() -> dict[str, Any]:
        cleared = len(runtime.cache)
        runtime.cache.clear()
        return {"cleared": cleared}

    # The SDK's registration event (after the MLflow steps of register_tokenized_model).
    add_event_routes(app, runtime, token)

    for mount in PROXY_MOUNTS:
        app.add_route(f"{mount}/{{path:path}}", _proxy_endpoint(runtime, mount), methods=PROXY_METHODS,
                      include_in_schema=False)
    return ApiService(runtime, app)


def _proxy_endpoint(runtime: ApiRuntime, mount: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await proxy_mount(runtime, request, mount, request.path_params["path"])

    endpoint.__name__ = f"proxy_{mount.strip('/').replace('/', '_').replace('.', '_')}"
    return endpoint


def app_from_env() -> ApiService:
    """App factory for ``uvicorn --factory``: the config comes from ``HOKUSAI_STACK_SERVICE_CONFIG``."""
    config = load_service_config()
    if not isinstance(config, ApiServiceConfig):
        raise TypeError(f"expected an API service config, got kind {config.kind!r}")
    return create_app(config)
