"""The auth service's request and response bodies (``contract/auth_openapi.json``, field for
field, plus the stack's documented extensions) and the defaults they carry.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

__all__ = [
    "DEFAULT_SCOPES",
    "OVERAGE_PRICE",
    "PRICE_PER_PREDICTION",
    "WRITE_SCOPES",
    "APIKeyCreate",
    "APIKeyInfo",
    "APIKeyResponse",
    "APIKeyValidation",
    "BillingInfo",
    "FaultSet",
    "UsageDebit",
    "UsageRecord",
    "UsageStats",
    "ValidationResult",
]

#: scopes of a key created without ``scopes`` (the platform CLI's defaults, contract section 3)
DEFAULT_SCOPES = ("model:read", "model:write", "mlflow:access")
#: any one of these lets a key write (contract section 4); the write-scope fault removes them
WRITE_SCOPES = frozenset({"model:write", "mlflow:write", "mlflow:access", "admin", "mlflow:admin",
                          "write", "full_access"})
#: default debit per prediction when the debit body gives no ``amount``
PRICE_PER_PREDICTION = 0.01
#: overage price per prediction above ``monthly_prediction_limit`` (billing endpoint)
OVERAGE_PRICE = 0.001

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
