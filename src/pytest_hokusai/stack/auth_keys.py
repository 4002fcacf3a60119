"""The auth service's key administration routes (admin bearer token): create, list, get,
revoke and rotate keys.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from .auth_common import get_or_404, key_info, request_store
from .auth_schemas import DEFAULT_SCOPES, APIKeyCreate, APIKeyInfo, APIKeyResponse
from .keystore import utcnow

__all__ = ["add_key_by_id_routes", "add_key_routes"]

log = logging.getLogger("pytest_hokusai.stack.auth")


def add_key_routes(app: FastAPI, admin: list[Any]) -> None:
    """``POST``/``GET /api/v1/keys``."""
    metrics: dict[str, int] = app.state.metrics

    # -- keys (admin) ----------------------------------------------------------------------
    @app.post("/api/v1/keys", response_model=APIKeyResponse, dependencies=admin)
    def create_key(request: Request, body: APIKeyCreate) -> APIKeyResponse:
        now = utcnow()
        expires_at = None
        if body.expires_in_seconds is not None:
            expires_at = now + timedelta(seconds=body.expires_in_seconds)
        elif body.expires_in_days is not None:
            expires_at = now + timedelta(days=body.expires_in_days)
        raw, rec = request_store(request).create(
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
        return APIKeyResponse(api_key=raw, key_info=key_info(rec))

    @app.get("/api/v1/keys", response_model=list[APIKeyInfo], dependencies=admin)
    def list_keys(request: Request, service_id: str | None = None,
                  active_only: bool = False) -> list[APIKeyInfo]:
        return [key_info(r) for r in request_store(request).list_keys(service_id, active_only)]


def add_key_by_id_routes(app: FastAPI, admin: list[Any]) -> None:
    """``GET``/``DELETE /api/v1/keys/{key_id}`` and ``POST /api/v1/keys/{key_id}/rotate``."""
    metrics: dict[str, int] = app.state.metrics

    # -- keys by id (admin) ----------------------------------------------------------------
    @app.get("/api/v1/keys/{key_id}", response_model=APIKeyInfo, dependencies=admin)
    def get_key(request: Request, key_id: uuid.UUID) -> APIKeyInfo:
        return key_info(get_or_404(request, key_id))

    @app.delete("/api/v1/keys/{key_id}", dependencies=admin)
    def revoke_key(request: Request, key_id: uuid.UUID) -> dict[str, Any]:
        rec = request_store(request).revoke(str(key_id))
        if rec is None:
            raise HTTPException(404, "API key not found")
        metrics["keys_revoked"] += 1
        log.info("revoked key %s (%s)", rec.key_id, rec.key_prefix)
        return {"message": "API key revoked", "key_id": rec.key_id, "is_active": False}

    @app.post("/api/v1/keys/{key_id}/rotate", response_model=APIKeyResponse, dependencies=admin)
    def rotate_key(request: Request, key_id: uuid.UUID) -> APIKeyResponse:
        try:
            result = request_store(request).rotate(str(key_id))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if result is None:
            raise HTTPException(404, "API key not found")
        raw, rec = result
        log.info("rotated key %s -> %s (%s)", key_id, rec.key_id, rec.key_prefix)
        return APIKeyResponse(api_key=raw, key_info=key_info(rec))
