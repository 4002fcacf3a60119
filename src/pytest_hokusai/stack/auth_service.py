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

import hmac
import ipaddress
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, NoReturn

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import STACK_TOKEN_HEADER, AuthServiceConfig, load_service_config
from .faults import FAULTS, check_faults
from .keystore import SERVICE_IDS, KeyRecord, KeyStore, utcnow

__all__ = [
    "DEFAULT_SCOPES",
    "HTML_503",
    "PRICE_PER_PREDICTION",
    "WRITE_SCOPES",
    "APIKeyCreate",
    "APIKeyInfo",
    "APIKeyResponse",
    "APIKeyValidation",
    "BillingInfo",
    "UsageDebit",
    "UsageRecord",
    "UsageStats",
    "ValidationResult",
    "app_from_env",
    "create_app",
]

log = logging.getLogger("pytest_hokusai.stack.auth")

SERVICE_NAME = "Hokusai Authentication Service"
VERSION = "1.0.0"
#: scopes of a key created without ``scopes`` (the platform CLI's defaults, contract section 3)
DEFAULT_SCOPES = ("model:read", "model:write", "mlflow:access")
#: any one of these lets a key write (contract section 4); the write-scope fault removes them
WRITE_SCOPES = frozenset({"model:write", "mlflow:write", "mlflow:access", "admin", "mlflow:admin",
                          "write", "full_access"})
#: default debit per prediction when the debit body gives no ``amount``
PRICE_PER_PREDICTION = 0.01
#: overage price per prediction above ``monthly_prediction_limit`` (billing endpoint)
OVERAGE_PRICE = 0.001
#: the balancer's page for a down target (F6)
HTML_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body><center>"
    "<h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)
VALIDATE_PATH = "/api/v1/keys/validate"
_AUTH_FAULTS = frozenset(n for n, f in FAULTS.items() if f.component == "auth")


# -- schemas (contract/auth_openapi.json, field for field) --------------------------------------


class APIKeyCreate(BaseModel):
    """Schema for creating an API key (spec fields, then the stack-only extensions)."""

    name: str = Field(min_length=1, max_length=100)
    service_id: str = Field(pattern=r"^(website|prediction|platform)$")
    scopes: list[str] | None = None
    environment: str = Field("production", pattern=r"^(production|test|development)$")
    expires_in_days: int | None = Field(None, ge=1, le=365)
    rate_limit_per_hour: int | None = Field(None, ge=10, le=100000)
    monthly_prediction_limit: int | None = Field(None, ge=0)
    allowed_ips: list[str] | None = None
    billing_plan: str = "free"
    # stack-only extensions
    is_admin: bool = False
    email: str | None = None
    roles: list[str] | None = None
    user_id: str | None = Field(None, min_length=1, max_length=255)
    expires_in_seconds: int | None = None
    balance: float | None = None

    @field_validator("allowed_ips")
    @classmethod
    def _ips_parse(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            ipaddress.ip_network(item, strict=False)  # ValueError -> 422
        return value


class APIKeyInfo(BaseModel):
    """Schema for API key information (without the actual key)."""

    key_id: uuid.UUID
    name: str
    key_prefix: str
    user_id: str
    service_id: str
    scopes: list[str]
    environment: str
    is_active: bool
    rate_limit_per_hour: int
    monthly_prediction_limit: int | None
    billing_plan: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class APIKeyResponse(BaseModel):
    """Response when creating (or rotating) an API key."""

    api_key: str = Field(description="The full API key (only shown once)")
    key_info: APIKeyInfo


class APIKeyValidation(BaseModel):
    """Request to validate an API key. ``api_key`` is optional here (Bearer works too)."""

    api_key: str | None = None
    required_scope: str | None = None
    service_id: str | None = None
    client_ip: str | None = None


class ValidationResult(BaseModel):
    """Result of API key validation, plus the fields the platform's middleware reads."""

    is_valid: bool
    key_id: str | None = None
    user_id: str | None = None
    service_id: str | None = None
    scopes: list[str] | None = None
    rate_limit_per_hour: int | None = None
    billing_plan: str | None = None
    monthly_prediction_limit: int | None = None
    error: str | None = None
    email: str | None = None
    roles: list[str] = Field(default_factory=list)
    is_admin: bool = False
    has_sufficient_balance: bool = True
    balance: float = 0.0


class UsageRecord(BaseModel):
    """Record API usage."""

    service_id: str
    endpoint: str
    status_code: int
    response_time_ms: int
    predictions_count: int = 0
    compute_ms: int = 0


class UsageDebit(BaseModel):
    """A usage debit as the platform's middleware sends it (contract 2.4); ``amount`` is stack-only."""

    model_id: str | int | None = None
    endpoint: str = ""
    response_time_ms: int = 0
    status_code: int = 0
    service_id: str = "platform"
    idempotency_key: str | None = None
    compute_ms: int = 0
    predictions_count: int = Field(1, ge=0)
    amount: float | None = Field(None, ge=0)


class UsageStats(BaseModel):
    """Usage statistics for an API key."""

    key_id: uuid.UUID
    period: str
    total_requests: int
    total_predictions: int
    total_compute_ms: int
    average_response_time_ms: float
    error_rate: float
    top_endpoints: list[dict[str, Any]]


class BillingInfo(BaseModel):
    """Billing information for an API key."""

    key_id: uuid.UUID
    billing_plan: str
    current_usage: dict[str, Any]
    monthly_limit: int | None
    overage_charges: float = 0.0
    next_billing_date: datetime | None


class FaultSet(BaseModel):
    """Body of ``PUT /_stack/faults``."""

    faults: list[str]


# -- helpers -----------------------------------------------------------------------------------


def _info(rec: KeyRecord) -> APIKeyInfo:
    return APIKeyInfo(
        key_id=uuid.UUID(rec.key_id), name=rec.name, key_prefix=rec.key_prefix, user_id=rec.user_id,
        service_id=rec.service_id, scopes=list(rec.scopes), environment=rec.environment,
        is_active=rec.is_active, rate_limit_per_hour=rec.rate_limit_per_hour,
        monthly_prediction_limit=rec.monthly_prediction_limit, billing_plan=rec.billing_plan,
        created_at=rec.created_at, expires_at=rec.expires_at, last_used_at=rec.last_used_at,
    )


def _has_stack_token(headers: Any, token: str) -> bool:
    given = headers.get(STACK_TOKEN_HEADER)
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def _faults(request: Request) -> frozenset[str]:
    """The faults in effect for this request (none for the launcher's own requests)."""
    if _has_stack_token(request.headers, request.app.state.admin_token):
        return frozenset()
    return frozenset(request.app.state.faults)


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.store
    return store


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail)


def _month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = int(period[:4]), int(period[5:7])
    if not 1 <= month <= 12 or year < 1:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", "period"), "input": period,
            "msg": "Value error, period must be YYYY-MM with a month from 01 to 12",
        }])
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _ip_allowed(client_ip: str | None, allowed: tuple[str, ...]) -> bool:
    if not client_ip:
        return False
    try:
        addr = ipaddress.ip_address(client_ip.strip())
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net, strict=False) for net in allowed)


_bearer = HTTPBearer(auto_error=False, scheme_name="AuthServiceAuth")


def require_admin(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Dependency: ``Authorization: Bearer <admin token>`` or 401."""
    token: str = request.app.state.admin_token
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(status_code=401, detail="Admin authentication required",
                            headers={"WWW-Authenticate": "Bearer"})


def require_stack_token(request: Request) -> None:
    """Dependency of the ``/_stack/*`` control endpoints: the stack token header or 403."""
    if not _has_stack_token(request.headers, request.app.state.admin_token):
        raise HTTPException(status_code=403, detail=f"{STACK_TOKEN_HEADER} header missing or wrong")


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
                if not _has_stack_token(given, self.holder.state.admin_token):
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
            _store(request).ping()
        except Exception as exc:  # noqa: BLE001 - readiness reports any database failure
            log.warning("readiness: database check failed: %s", type(exc).__name__)
            return JSONResponse(status_code=503, content={
                "status": "not_ready", "checks": {"database": "error"},
                "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return JSONResponse({"status": "ready", "checks": {"database": "ok"}})

    @app.get("/metrics")
    def metrics_endpoint(request: Request) -> dict[str, Any]:
        total, active = _store(request).count_keys()
        return {**metrics, "keys_total": total, "keys_active": active,
                "uptime_seconds": round(time.monotonic() - app.state.started, 3),
                "faults": sorted(app.state.faults)}

    # -- keys (admin) ----------------------------------------------------------------------
    @app.post("/api/v1/keys", response_model=APIKeyResponse, dependencies=admin)
    def create_key(request: Request, body: APIKeyCreate) -> APIKeyResponse:
        now = utcnow()
        expires_at = None
        if body.expires_in_seconds is not None:
            expires_at = now + timedelta(seconds=body.expires_in_seconds)
        elif body.expires_in_days is not None:
            expires_at = now + timedelta(days=body.expires_in_days)
        raw, rec = _store(request).create(
            body.name, body.service_id,
            scopes=DEFAULT_SCOPES if body.scopes is None else body.scopes,
            environment=body.environment, user_id=body.user_id or "stack-user", email=body.email,
            roles=body.roles or (), is_admin=body.is_admin,
            rate_limit_per_hour=body.rate_limit_per_hour or 1000,
            monthly_prediction_limit=body.monthly_prediction_limit, billing_plan=body.billing_plan,
            allowed_ips=body.allowed_ips, expires_at=expires_at, balance=body.balance, now=now,
        )
        metrics["keys_created"] += 1
        log.info("created key %s (%s, service %s)", rec.key_id, rec.key_prefix, rec.service_id)
        return APIKeyResponse(api_key=raw, key_info=_info(rec))

    @app.get("/api/v1/keys", response_model=list[APIKeyInfo], dependencies=admin)
    def list_keys(request: Request, service_id: str | None = None,
                  active_only: bool = False) -> list[APIKeyInfo]:
        return [_info(r) for r in _store(request).list_keys(service_id, active_only)]

    # -- validation (no admin auth) --------------------------------------------------------
    @app.post(VALIDATE_PATH, response_model=ValidationResult, responses={
        401: {"description": "Invalid, unknown, expired, revoked or wrong-service key"},
        429: {"description": "Rate limit exceeded"}})
    def validate(request: Request,
                 body: Annotated[APIKeyValidation | None, Body()] = None) -> ValidationResult:
        faults = _faults(request)
        metrics["validations_total"] += 1
        if "rate-limited" in faults:
            metrics["validations_rate_limited"] += 1
            raise HTTPException(429, "Rate limit exceeded", headers={"Retry-After": "60"})
        body = body or APIKeyValidation()
        raw = body.api_key
        if "auth-body-only" in faults:
            if raw is None:  # the published spec: api_key is required, Bearer is not read
                raise RequestValidationError([{"type": "missing", "loc": ("body", "api_key"),
                                               "msg": "Field required", "input": None}])
        elif not raw:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            raw = token.strip() if scheme.lower() == "bearer" else None
        if not raw:
            return _reject("API key required")
        store = _store(request)
        rec = store.lookup_by_raw(raw)
        now = utcnow()
        if rec is None:
            return _reject("API key not found or invalid")
        if not rec.is_active:
            return _reject("API key has been revoked", rec)
        if rec.is_expired(now):
            return _reject("API key has expired", rec)
        if body.service_id is not None and body.service_id != rec.service_id:
            return _reject(f"API key is registered for service '{rec.service_id}', not "
                           f"'{body.service_id}'. Valid service IDs: {', '.join(SERVICE_IDS)}", rec)
        if rec.allowed_ips is not None:
            client_ip = body.client_ip or (request.client.host if request.client else None)
            if not _ip_allowed(client_ip, rec.allowed_ips):
                return _reject(f"Client IP {client_ip} is not allowed for this API key", rec)
        if body.required_scope and body.required_scope not in rec.scopes:
            return _reject(f"API key lacks the required scope '{body.required_scope}'", rec)
        wait = store.note_validation(rec.key_id, rec.rate_limit_per_hour, now=now)
        if wait is not None:
            metrics["validations_rate_limited"] += 1
            log.info("validate: key %s over %d/hour", rec.key_id, rec.rate_limit_per_hour)
            raise HTTPException(429, "Rate limit exceeded", headers={"Retry-After": str(math.ceil(wait))})
        store.touch(rec.key_id, now=now)
        metrics["validations_valid"] += 1
        scopes = list(rec.scopes)
        if "write-scope" in faults:
            scopes = [s for s in scopes if s not in WRITE_SCOPES] or ["read"]
        sufficient, balance = rec.has_sufficient_balance, rec.balance or 0.0
        if "payment-required" in faults:
            sufficient, balance = False, 0.0
        return ValidationResult(
            is_valid=True, key_id=rec.key_id, user_id=rec.user_id, service_id=rec.service_id,
            scopes=scopes, rate_limit_per_hour=rec.rate_limit_per_hour, billing_plan=rec.billing_plan,
            monthly_prediction_limit=rec.monthly_prediction_limit, error=None, email=rec.email,
            roles=list(rec.roles), is_admin=rec.is_admin, has_sufficient_balance=sufficient,
            balance=balance,
        )

    def _reject(detail: str, rec: KeyRecord | None = None) -> NoReturn:
        metrics["validations_rejected"] += 1
        log.info("validate: rejected key %s: %s", rec.key_id if rec else "(unknown)", detail)
        raise _unauthorized(detail)

    # -- keys by id (admin) ----------------------------------------------------------------
    def _get_or_404(request: Request, key_id: uuid.UUID) -> KeyRecord:
        rec = _store(request).get(str(key_id))
        if rec is None:
            raise HTTPException(404, "API key not found")
        return rec

    @app.get("/api/v1/keys/{key_id}", response_model=APIKeyInfo, dependencies=admin)
    def get_key(request: Request, key_id: uuid.UUID) -> APIKeyInfo:
        return _info(_get_or_404(request, key_id))

    @app.delete("/api/v1/keys/{key_id}", dependencies=admin)
    def revoke_key(request: Request, key_id: uuid.UUID) -> dict[str, Any]:
        rec = _store(request).revoke(str(key_id))
        if rec is None:
            raise HTTPException(404, "API key not found")
        metrics["keys_revoked"] += 1
        log.info("revoked key %s (%s)", rec.key_id, rec.key_prefix)
        return {"message": "API key revoked", "key_id": rec.key_id, "is_active": False}

    @app.post("/api/v1/keys/{key_id}/rotate", response_model=APIKeyResponse, dependencies=admin)
    def rotate_key(request: Request, key_id: uuid.UUID) -> APIKeyResponse:
        try:
            result = _store(request).rotate(str(key_id))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if result is None:
            raise HTTPException(404, "API key not found")
        raw, rec = result
        log.info("rotated key %s -> %s (%s)", key_id, rec.key_id, rec.key_prefix)
        return APIKeyResponse(api_key=raw, key_info=_info(rec))

    # -- usage -----------------------------------------------------------------------------
    @app.get("/api/v1/usage/aggregate", dependencies=admin)
    def aggregate(request: Request, service_id: str | None = None, start_date: datetime | None = None,
                  end_date: datetime | None = None) -> dict[str, Any]:
        start, end = _utc(start_date), _utc(end_date)
        store = _store(request)
        s = store.summarize(service_id=service_id, start=start, end=end)
        return {
            "service_id": service_id, "start_date": start, "end_date": end,
            "total_requests": s.total_requests, "total_predictions": s.total_predictions,
            "total_compute_ms": s.total_compute_ms, "average_response_time_ms": s.average_response_time_ms,
            "error_rate": s.error_rate, "total_charged": s.total_amount, "top_endpoints": s.top_endpoints,
            "active_keys": store.distinct_keys_with_usage(service_id=service_id, start=start, end=end),
        }

    @app.post("/api/v1/usage/{key_id}")
    def record_usage(request: Request, key_id: uuid.UUID, body: UsageRecord) -> dict[str, Any]:
        try:
            _store(request).record_usage(str(key_id), **body.model_dump())
        except KeyError:
            raise HTTPException(404, "API key not found") from None
        return {"status": "recorded", "key_id": str(key_id)}

    @app.post("/api/v1/usage/{key_id}/debit", responses={402: {"description": "Insufficient balance"}})
    def debit(request: Request, key_id: uuid.UUID, body: UsageDebit) -> dict[str, Any]:
        rec = _get_or_404(request, key_id)
        amount = body.amount if body.amount is not None else body.predictions_count * PRICE_PER_PREDICTION
        if "payment-required" in _faults(request):
            raise HTTPException(402, {"error": "insufficient_settled_balance",
                                      "message": "Insufficient balance", "balance": 0.0, "required": amount})
        result = _store(request).debit(
            rec.key_id, amount, service_id=body.service_id, endpoint=body.endpoint,
            status_code=body.status_code, response_time_ms=body.response_time_ms,
            predictions_count=body.predictions_count, compute_ms=body.compute_ms,
            model_id=None if body.model_id is None else str(body.model_id),
            idempotency_key=body.idempotency_key,
        )
        if not result.accepted:
            raise HTTPException(402, {"error": "insufficient_settled_balance",
                                      "message": "Insufficient balance",
                                      "balance": result.balance, "required": amount})
        return {"accepted": True, "key_id": rec.key_id, "charged": result.charged,
                "balance": result.balance, "idempotent_replay": result.replay}

    @app.get("/api/v1/usage/{key_id}/stats", response_model=UsageStats, dependencies=admin)
    def usage_stats(request: Request, key_id: uuid.UUID,
                    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None) -> UsageStats:
        rec = _get_or_404(request, key_id)
        period = period or utcnow().strftime("%Y-%m")
        start, end = _month_bounds(period)
        s = _store(request).summarize(key_id=rec.key_id, start=start, end=end)
        return UsageStats(key_id=key_id, period=period, total_requests=s.total_requests,
                          total_predictions=s.total_predictions, total_compute_ms=s.total_compute_ms,
                          average_response_time_ms=s.average_response_time_ms, error_rate=s.error_rate,
                          top_endpoints=s.top_endpoints)

    @app.get("/api/v1/usage/{key_id}/billing", response_model=BillingInfo, dependencies=admin)
    def billing(request: Request, key_id: uuid.UUID) -> BillingInfo:
        rec = _get_or_404(request, key_id)
        now = utcnow()
        start, end = _month_bounds(now.strftime("%Y-%m"))
        s = _store(request).summarize(key_id=rec.key_id, start=start, end=end)
        limit = rec.monthly_prediction_limit
        over = max(0, s.total_predictions - limit) if limit is not None else 0
        return BillingInfo(
            key_id=key_id, billing_plan=rec.billing_plan, monthly_limit=limit,
            current_usage={"period": now.strftime("%Y-%m"), "total_requests": s.total_requests,
                           "total_predictions": s.total_predictions, "total_compute_ms": s.total_compute_ms,
                           "total_charged": s.total_amount, "balance": rec.balance},
            overage_charges=round(over * OVERAGE_PRICE, 6), next_billing_date=end,
        )

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

