"""The auth service's key validation (``POST /api/v1/keys/validate``, no admin auth): the
checks the live service makes, in its order, and its answers (contract sections 2.1-2.3).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Annotated, NoReturn

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from .auth_common import VALIDATE_PATH, request_faults, request_store, unauthorized
from .auth_schemas import WRITE_SCOPES, APIKeyValidation, ValidationResult
from .keystore import SERVICE_IDS, KeyRecord, utcnow

__all__ = ["add_validation_route"]

log = logging.getLogger("pytest_hokusai.stack.auth")


def _ip_allowed(client_ip: str | None, allowed: tuple[str, ...]) -> bool:
    if not client_ip:
        return False
    try:
        addr = ipaddress.ip_address(client_ip.strip())
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net, strict=False) for net in allowed)


def add_validation_route(app: FastAPI) -> None:
    """``POST /api/v1/keys/validate``: 200 with a ``ValidationResult``, 401 or 429."""
    metrics: dict[str, int] = app.state.metrics

    # -- validation (no admin auth) --------------------------------------------------------
    @app.post(VALIDATE_PATH, response_model=ValidationResult, responses={
        401: {"description": "Invalid, unknown, expired, revoked or wrong-service key"},
        429: {"description": "Rate limit exceeded"}})
    def validate(request: Request,
                 body: Annotated[APIKeyValidation | None, Body()] = None) -> ValidationResult:
        faults = request_faults(request)
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
        store = request_store(request)
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
        raise unauthorized(detail)
