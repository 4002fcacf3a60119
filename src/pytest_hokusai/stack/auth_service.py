"""The local stack's auth service: a FastAPI app following ``contract/auth_openapi.json`` and the
real service's observed behaviour (contract sections 2.1-2.4).

``create_app(AuthServiceConfig)`` returns the app; ``python -m pytest_hokusai.stack.serve`` serves
it from the config in ``HOKUSAI_STACK_SERVICE_CONFIG`` (``app_from_env`` is a ``uvicorn --factory``
alternative).

Behaviour worth knowing (the real service, not the published spec, is the model):

- ``POST /api/v1/keys/validate`` takes the key from body ``api_key`` or ``Authorization: Bearer``
  (body first), checks ``service_id`` (if given) against the key's registered service, answers 200
  with a ``ValidationResult`` plus the fields the platform's middleware reads (``email``, ``roles``,
  ``is_admin``, ``has_sufficient_balance``, ``balance``), and 401 ``{"detail": ...}`` for every
  invalid key: never 200 with ``is_valid`` false (F30). More than ``rate_limit_per_hour``
  validations of a key within an hour give 429 with ``Retry-After``.
- Stack-only extensions of ``APIKeyCreate`` (all optional): ``is_admin`` (bool, default false),
  ``email``, ``roles`` (list), ``user_id`` (default ``stack-user``), ``expires_in_seconds`` (int,
  wins over ``expires_in_days``; ``<= 0`` creates an already-expired key) and ``balance`` (float;
  default null = unmetered). ``scopes`` defaults to ``model:read, model:write, mlflow:access``
  (the platform CLI's defaults), ``rate_limit_per_hour`` to 1000.
- ``POST /api/v1/usage/{key_id}/debit`` (contract 2.4): charges ``amount`` (stack extension, default
  ``predictions_count * 0.01``); 402 ``{"detail": {"error": "insufficient_settled_balance", ...}}``
  when a metered key's balance is too low.
- Fault switches: ``GET``/``PUT /_stack/faults`` with header ``X-Hokusai-Stack-Token: <admin
  token>``. The fault set is read on every request. A request that carries that header with the
  right token bypasses every fault (so a launcher can mint keys and check readiness on a faulted
  service); clients under test never send it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth_common import VALIDATE_PATH, has_stack_token, request_store, require_admin, require_stack_token
from .auth_keys import add_key_by_id_routes, add_key_routes
from .auth_schemas import FaultSet
from .auth_usage import add_usage_routes
from .auth_validation import add_validation_route
from .config import STACK_TOKEN_HEADER, AuthServiceConfig, load_service_config
from .faults import FAULTS, check_faults
from .keystore import KeyStore, utcnow

__all__ = ["HTML_503", "app_from_env", "create_app"]

log = logging.getLogger("pytest_hokusai.stack.auth")

SERVICE_NAME = "Hokusai Authentication Service"
VERSION = "1.0.0"
#: the balancer's page for a down target (F6)
HTML_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body><center>"
    "<h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)
_AUTH_FAULTS = frozenset(n for n, f in FAULTS.items() if f.component == "auth")


class _FaultGate:
    """ASGI middleware for the outage faults (auth-down, auth-misrouted)."""

    def __init__(self, app: ASGIApp, holder: FastAPI) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            faults = self.holder.state.faults
            path: str = scope["path"]
            if faults and not path.startswith("/_stack/"):
                wanted = STACK_TOKEN_HEADER.lower().encode("latin-1")
                given = {}
                for k, v in scope["headers"]:
                    if k.lower() == wanted:
                        given[STACK_TOKEN_HEADER] = v.decode("latin-1")
                if not has_stack_token(given, self.holder.state.admin_token):
                    if "auth-down" in faults:
                        await HTMLResponse(HTML_503, status_code=503)(scope, receive, send)
                        return
                    if "auth-misrouted" in faults and path.rstrip("/") == VALIDATE_PATH:
                        await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


# -- the app -----------------------------------------------------------------------------------


def create_app(config: AuthServiceConfig) -> FastAPI:
    """Build the auth service for ``config`` (key store at ``config.db_url``)."""
    store = KeyStore(config.db_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title=SERVICE_NAME, version=VERSION, lifespan=lifespan,
                  description="Local reference imitation of the Hokusai auth service (pytest-hokusai).")
    app.state.store = store
    app.state.admin_token = config.admin_token
    app.state.faults = set(check_faults(list(config.faults)))
    app.state.started = time.monotonic()
    app.state.metrics = {"validations_total": 0, "validations_valid": 0, "validations_rejected": 0,
                         "validations_rate_limited": 0, "keys_created": 0, "keys_revoked": 0}
    app.add_middleware(_FaultGate, holder=app)
    metrics: dict[str, int] = app.state.metrics
    admin = [Depends(require_admin)]

    # -- health ----------------------------------------------------------------------------
    @app.get("/")
    def root() -> dict[str, Any]:
        return {"service": SERVICE_NAME, "version": VERSION, "status": "operational"}

    @app.get("/health")
    @app.get("/auth/health")
    def health() -> dict[str, Any]:
        return {"status": "healthy", "service": "auth", "version": VERSION,
                "timestamp": utcnow().isoformat()}

    @app.get("/ready")
    @app.get("/auth/ready")
    def ready(request: Request) -> JSONResponse:
        try:
            request_store(request).ping()
        except Exception as exc:  # noqa: BLE001 - readiness reports any database failure
            log.warning("readiness: database check failed: %s", type(exc).__name__)
            return JSONResponse(status_code=503, content={
                "status": "not_ready", "checks": {"database": "error"},
                "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return JSONResponse({"status": "ready", "checks": {"database": "ok"}})

    @app.get("/metrics")
    def metrics_endpoint(request: Request) -> dict[str, Any]:
        total, active = request_store(request).count_keys()
        return {**metrics, "keys_total": total, "keys_active": active,
                "uptime_seconds": round(time.monotonic() - app.state.started, 3),
                "faults": sorted(app.state.faults)}

    # Registered in the order the routes were declared before the split, so /openapi.json and
    # route matching stay as they were (validate before /api/v1/keys/{key_id}).
    add_key_routes(app, admin)
    add_validation_route(app)
    add_key_by_id_routes(app, admin)
    add_usage_routes(app, admin)

    # -- stack control ---------------------------------------------------------------------
    @app.get("/_stack/faults", include_in_schema=False, dependencies=[Depends(require_stack_token)])
    def get_faults() -> dict[str, Any]:
        return {"faults": sorted(app.state.faults), "effective": sorted(app.state.faults & _AUTH_FAULTS)}

    @app.put("/_stack/faults", include_in_schema=False, dependencies=[Depends(require_stack_token)])
    def put_faults(body: FaultSet) -> JSONResponse:
        try:
            names = check_faults(body.faults)
        except ValueError as exc:
            return JSONResponse(status_code=422, content={"detail": str(exc)})
        app.state.faults = set(names)
        log.info("faults set to %s", ", ".join(names) or "(none)")
        return JSONResponse({"faults": sorted(names), "effective": sorted(set(names) & _AUTH_FAULTS)})

    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory``: the config comes from ``HOKUSAI_STACK_SERVICE_CONFIG``."""
    config = load_service_config()
    if not isinstance(config, AuthServiceConfig):
        raise TypeError(f"expected an auth service config, got kind {config.kind!r}")
    return create_app(config)

