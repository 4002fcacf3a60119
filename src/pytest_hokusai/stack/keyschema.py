"""The key store's tables (portable SQLAlchemy 2.x types only) and the values it hands out.

Split from keystore.py so the schema can be read (or compiled for another dialect) without the
store's queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .apikey import utcnow

__all__ = ["METADATA", "ApiKeyRow", "DebitResult", "KeyRecord", "UsageRow", "UsageSummary", "ValidationLogRow", "as_utc"]


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (None stays None)."""
    # SQLite returns naive datetimes (everything stored is UTC); PostgreSQL returns them in the
    # session's time zone.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# -- schema --------------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class ApiKeyRow(_Base):
    """One API key (hashed)."""

    __tablename__ = "hokusai_api_keys"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_prefix: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    service_id: Mapped[str] = mapped_column(String(32), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    environment: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    rate_limit_per_hour: Mapped[int] = mapped_column(Integer)
    monthly_prediction_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billing_plan: Mapped[str] = mapped_column(String(64))
    allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    balance: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UsageRow(_Base):
    """One usage record (``POST /api/v1/usage/{key_id}``) or debit (``.../debit``)."""

    __tablename__ = "hokusai_api_key_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(36), ForeignKey("hokusai_api_keys.key_id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "usage" or "debit"
    service_id: Mapped[str] = mapped_column(String(64), index=True)
    endpoint: Mapped[str] = mapped_column(String(1024))
    status_code: Mapped[int] = mapped_column(Integer)
    response_time_ms: Mapped[int] = mapped_column(Integer)
    predictions_count: Mapped[int] = mapped_column(Integer, default=0)
    compute_ms: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[float] = mapped_column(Float, default=0.0)
    model_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ValidationLogRow(_Base):
    """One accepted validation, kept for an hour: the per-key hourly rate limit counts these."""

    __tablename__ = "hokusai_api_key_validations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


#: The store's tables (for DDL inspection, e.g. compiling them for another dialect).
METADATA = _Base.metadata


# -- values handed out -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRecord:
    """A stored key's attributes (never the raw key, never its hash)."""

    key_id: str
    name: str
    key_prefix: str
    user_id: str
    email: str | None
    roles: tuple[str, ...]
    is_admin: bool
    service_id: str
    scopes: tuple[str, ...]
    environment: str
    is_active: bool
    rate_limit_per_hour: int
    monthly_prediction_limit: int | None
    billing_plan: str
    allowed_ips: tuple[str, ...] | None
    balance: float | None  #: None = unmetered (always sufficient)
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether ``expires_at`` is set and not in the future."""
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    @property
    def has_sufficient_balance(self) -> bool:
        """True for unmetered keys (balance None) and for a positive balance."""
        return self.balance is None or self.balance > 0

    @classmethod
    def _from_row(cls, row: ApiKeyRow) -> KeyRecord:
        created = as_utc(row.created_at)
        assert created is not None
        return cls(
            key_id=row.key_id,
            name=row.name,
            key_prefix=row.key_prefix,
            user_id=row.user_id,
            email=row.email,
            roles=tuple(row.roles or ()),
            is_admin=bool(row.is_admin),
            service_id=row.service_id,
            scopes=tuple(row.scopes or ()),
            environment=row.environment,
            is_active=bool(row.is_active),
            rate_limit_per_hour=row.rate_limit_per_hour,
            monthly_prediction_limit=row.monthly_prediction_limit,
            billing_plan=row.billing_plan,
            allowed_ips=tuple(row.allowed_ips) if row.allowed_ips is not None else None,
            balance=row.balance,
            created_at=created,
            expires_at=as_utc(row.expires_at),
            last_used_at=as_utc(row.last_used_at),
            revoked_at=as_utc(row.revoked_at),
        )


@dataclass(frozen=True)
class UsageSummary:
    """Totals over a set of usage records (``UsageStats`` without key_id/period)."""

    total_requests: int
    total_predictions: int
    total_compute_ms: int
    average_response_time_ms: float
    error_rate: float
    top_endpoints: list[dict[str, Any]]
    total_amount: float = 0.0


@dataclass(frozen=True)
class DebitResult:
    """Outcome of :meth:`KeyStore.debit`."""

    accepted: bool
    charged: float
    balance: float | None  #: after the debit; None = unmetered
    replay: bool = False  #: the idempotency key was seen before; nothing charged again
