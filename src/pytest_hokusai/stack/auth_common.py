"""What the auth service's route modules share: the request's store and faults, the admin and
stack-token dependencies, and a key record as the API shows it.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth_schemas import APIKeyInfo
from .config import STACK_TOKEN_HEADER
from .keystore import KeyRecord, KeyStore

__all__ = [
    "VALIDATE_PATH",
    "get_or_404",
    "has_stack_token",
    "key_info",
    "request_faults",
    "request_store",
    "require_admin",
    "require_stack_token",
    "unauthorized",
]

VALIDATE_PATH = "/api/v1/keys/validate"


def key_info(rec: KeyRecord) -> APIKeyInfo:
    """A stored key as the API lists it (never the raw key, never its hash)."""
    return APIKeyInfo(
        key_id=uuid.UUID(rec.key_id), name=rec.name, key_prefix=rec.key_prefix, user_id=rec.user_id,
        service_id=rec.service_id, scopes=list(rec.scopes), environment=rec.environment,
        is_active=rec.is_active, rate_limit_per_hour=rec.rate_limit_per_hour,
        monthly_prediction_limit=rec.monthly_prediction_limit, billing_plan=rec.billing_plan,
        created_at=rec.created_at, expires_at=rec.expires_at, last_used_at=rec.last_used_at,
    )


def has_stack_token(headers: Any, token: str) -> bool:
    """Whether ``headers`` carry the stack token (the launcher's own requests)."""
    given = headers.get(STACK_TOKEN_HEADER)
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def request_faults(request: Request) -> frozenset[str]:
    """The faults in effect for this request (none for the launcher's own requests)."""
    if has_stack_token(request.headers, request.app.state.admin_token):
        return frozenset()
    return frozenset(request.app.state.faults)


def request_store(request: Request) -> KeyStore:
    """The key store of the app serving ``request``."""
    store: KeyStore = request.app.state.store
    return store


def unauthorized(detail: str) -> HTTPException:
    """401 with ``{"detail": detail}`` (the live service's answer to every invalid key)."""
    return HTTPException(status_code=401, detail=detail)


def get_or_404(request: Request, key_id: uuid.UUID) -> KeyRecord:
    """The key ``key_id`` names, or 404."""
    rec = request_store(request).get(str(key_id))
    if rec is None:
        raise HTTPException(404, "API key not found")
    return rec



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
    if not has_stack_token(request.headers, request.app.state.admin_token):
        raise HTTPException(status_code=403, detail=f"{STACK_TOKEN_HEADER} header missing or wrong")
