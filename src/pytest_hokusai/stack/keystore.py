"""The local auth service's key store: API keys, usage records and a validation log.

Portable SQLAlchemy 2.x: a SQLite file by default, any SQLAlchemy URL (PostgreSQL included)
works, because the schema uses only portable types (``String``, ``Integer``, ``Float``,
``Boolean``, ``JSON``, ``DateTime(timezone=True)``) and every query is built with the ORM.

Keys are ``hk_live_`` (``hk_test_``, ``hk_dev_`` by environment) + 32 alphanumerics from
:mod:`secrets`. Only the key's SHA-256 hex digest and its ``key_prefix`` (the prefix plus the
first three characters of the secret part, e.g. ``hk_live_abc``) are stored; the raw key is
returned once by :meth:`KeyStore.create` / :meth:`KeyStore.rotate` and never kept.

A :class:`KeyStore` is safe to share between threads: each call opens its own session, and a
process-local lock serialises calls (SQLite allows one writer; the rate-limit check-and-log must
be atomic anyway).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    case,
    create_engine,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "ENVIRONMENT_PREFIXES",
    "SECRET_LENGTH",
    "SERVICE_IDS",
    "DebitResult",
    "KeyRecord",
    "KeyStore",
    "UsageSummary",
    "generate_key",
    "hash_key",
    "key_prefix_of",
    "utcnow",
]

#: service_id values the live service accepts (contract 2.1, ``2c4d840``), in the order its
#: error messages list them.
SERVICE_IDS = ("platform", "website", "prediction")
#: environment -> key prefix (contract section 3). ``live``/``dev`` are accepted as aliases.
ENVIRONMENT_PREFIXES = {"production": "hk_live_", "test": "hk_test_", "development": "hk_dev_"}
_ENV_ALIASES = {"live": "production", "prod": "production", "dev": "development"}
#: length of the secret part of a minted key
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_HOUR = timedelta(hours=1)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes (everything stored is UTC); PostgreSQL returns them in the
    # session's time zone.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _normalise_environment(environment: str) -> str:
    env = _ENV_ALIASES.get(environment, environment)
    if env not in ENVIRONMENT_PREFIXES:
        raise ValueError(f"unknown key environment {environment!r}; use one of {', '.join(ENVIRONMENT_PREFIXES)}")
    return env


def generate_key(environment: str = "production") -> str:
    """Mint a raw key: the environment's prefix + 32 random alphanumerics."""
    prefix = ENVIRONMENT_PREFIXES[_normalise_environment(environment)]
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_key(raw: str) -> str:
    """The stored form of a key: its SHA-256 hex digest."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def key_prefix_of(raw: str) -> str:
    """``hk_live_`` + the first three characters of the secret part (``hk_live_abc``)."""
    for prefix in ENVIRONMENT_PREFIXES.values():
        if raw.startswith(prefix):
            return raw[: len(prefix) + 3]
    return raw[:3]


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
        created = _aware(row.created_at)
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
            expires_at=_aware(row.expires_at),
            last_used_at=_aware(row.last_used_at),
            revoked_at=_aware(row.revoked_at),
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


# -- the store --------------------------------------------------------------------------------


class KeyStore:
    """API keys, usage and the validation log in one SQLAlchemy database.

    ``KeyStore("sqlite:////tmp/keys.db")`` creates the tables if needed; pass
    ``create_tables=False`` to build the engine without connecting (SQLAlchemy connects lazily).
    """

    def __init__(self, url: str, *, create_tables: bool = True) -> None:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {"future": True}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            database = parsed.database or ""
            if database in ("", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
            elif not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.RLock()
        if create_tables:
            self.create_tables()

    @property
    def dialect(self) -> str:
        """The database dialect name (``sqlite``, ``postgresql``, ...)."""
        return self.engine.dialect.name

    def create_tables(self) -> None:
        """Create the store's tables if they do not exist."""
        METADATA.create_all(self.engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock, self._sessions.begin() as session:
            yield session

    def ping(self) -> None:
        """Run a trivial query; raises the driver's error if the database is unusable."""
        with self._session() as s:
            s.execute(text("SELECT 1"))
            s.execute(select(func.count()).select_from(ApiKeyRow))

    # -- keys -------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        service_id: str,
        *,
        scopes: Sequence[str] = (),
        environment: str = "production",
        user_id: str = "stack-user",
        email: str | None = None,
        roles: Sequence[str] = (),
        is_admin: bool = False,
        rate_limit_per_hour: int = 1000,
        monthly_prediction_limit: int | None = None,
        billing_plan: str = "free",
        allowed_ips: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        balance: float | None = None,
        now: datetime | None = None,
    ) -> tuple[str, KeyRecord]:
        """Mint and store a key; return ``(raw_key, record)``. The raw key is not kept."""
        if service_id not in SERVICE_IDS:
            raise ValueError(f"unknown service_id {service_id!r}; use one of {', '.join(SERVICE_IDS)}")
        env = _normalise_environment(environment)
        raw = generate_key(env)
        row = ApiKeyRow(
            key_id=str(uuid.uuid4()),
            key_hash=hash_key(raw),
            key_prefix=key_prefix_of(raw),
            name=name,
            user_id=user_id,
            email=email,
            roles=list(roles),
            is_admin=is_admin,
            service_id=service_id,
            scopes=list(scopes),
            environment=env,
            is_active=True,
            rate_limit_per_hour=rate_limit_per_hour,
            monthly_prediction_limit=monthly_prediction_limit,
            billing_plan=billing_plan,
            allowed_ips=list(allowed_ips) if allowed_ips is not None else None,
            balance=balance,
            created_at=now or utcnow(),
            expires_at=expires_at,
        )
        with self._session() as s:
            s.add(row)
            s.flush()
            return raw, KeyRecord._from_row(row)

    def get(self, key_id: str) -> KeyRecord | None:
        """The key with this id, or None."""
        with self._session() as s:
            row = s.get(ApiKeyRow, str(key_id))
            return KeyRecord._from_row(row) if row else None

    def list_keys(self, service_id: str | None = None, active_only: bool = False) -> list[KeyRecord]:
        """Keys ordered by creation; ``active_only`` drops revoked and expired keys."""
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
        if service_id is not None:
            stmt = stmt.where(ApiKeyRow.service_id == service_id)
        if active_only:
            stmt = stmt.where(ApiKeyRow.is_active.is_(True))
        with self._session() as s:
            records = [KeyRecord._from_row(r) for r in s.scalars(stmt)]
        if active_only:
            now = utcnow()
            records = [r for r in records if not r.is_expired(now)]
        return records

    def lookup_by_raw(self, raw: str) -> KeyRecord | None:
        """The key whose hash matches ``raw`` (revoked and expired keys included), or None."""
        with self._session() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(raw))).first()
            return KeyRecord._from_row(row) if row else None

    def revoke(self, key_id: str, *, now: datetime | None = None) -> KeyRecord | None:
        """Deactivate a key (idempotent); None if there is no such key."""
        with self._session() as s:
            row = s.get(ApiKeyRow, str(key_id))
            if row is None:
                return None
            if row.is_active:
                row.is_active = False
                row.revoked_at = now or utcnow()
            return KeyRecord._from_row(row)

    def rotate(self, key_id: str, *, now: datetime | None = None) -> tuple[str, KeyRecord] | None:
        """Revoke a key and mint a new one (new key_id) with the same attributes.

        Returns ``(new_raw_key, new_record)``, None if there is no such key; raises ValueError
        if the key is already revoked.
        """
        when = now or utcnow()
        with self._session() as s:
            old = s.get(ApiKeyRow, str(key_id))
            if old is None:
                return None
            if not old.is_active:
                raise ValueError("API key has been revoked")
            raw = generate_key(old.environment)
            new = ApiKeyRow(
                key_id=str(uuid.uuid4()),
                key_hash=hash_key(raw),
                key_prefix=key_prefix_of(raw),
                name=old.name,
                user_id=old.user_id,
                email=old.email,
                roles=list(old.roles or ()),
                is_admin=old.is_admin,
                service_id=old.service_id,
                scopes=list(old.scopes or ()),
                environment=old.environment,
                is_active=True,
                rate_limit_per_hour=old.rate_limit_per_hour,
                monthly_prediction_limit=old.monthly_prediction_limit,
                billing_plan=old.billing_plan,
                allowed_ips=list(old.allowed_ips) if old.allowed_ips is not None else None,
                balance=old.balance,
                created_at=when,
                expires_at=old.expires_at,
            )
            old.is_active = False
            old.revoked_at = when
            s.add(new)
            s.flush()
            return raw, KeyRecord._from_row(new)

    def touch(self, key_id: str, *, now: datetime | None = None) -> None:
        """Set ``last_used_at``."""
        with self._session() as s:
            row = s.get(ApiKeyRow, str(key_id))
            if row is not None:
                row.last_used_at = now or utcnow()

    def count_keys(self) -> tuple[int, int]:
        """``(total, active)`` key counts."""
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0
            active = s.scalar(
                select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.is_active.is_(True))
            ) or 0
        return int(total), int(active)

    # -- hourly rate limit --------------------------------------------------------------------
    def count_validations_in_last_hour(self, key_id: str, *, now: datetime | None = None) -> int:
        """Accepted validations of the key in the hour before ``now``."""
        cutoff = (now or utcnow()) - _HOUR
        with self._session() as s:
            n = s.scalar(
                select(func.count()).select_from(ValidationLogRow).where(
                    ValidationLogRow.key_id == str(key_id), ValidationLogRow.at > cutoff
                )
            )
        return int(n or 0)

    def note_validation(self, key_id: str, limit: int, *, now: datetime | None = None) -> float | None:
        """Count one validation against the hourly limit, atomically.

        Returns None if the validation is within ``limit`` (and logs it), else the number of
        seconds until the oldest logged validation leaves the window (for ``Retry-After``).
        """
        when = now or utcnow()
        cutoff = when - _HOUR
        key_id = str(key_id)
        with self._session() as s:
            s.execute(delete(ValidationLogRow).where(
                ValidationLogRow.key_id == key_id, ValidationLogRow.at <= cutoff
            ))
            count = s.scalar(
                select(func.count()).select_from(ValidationLogRow).where(ValidationLogRow.key_id == key_id)
            ) or 0
            if count >= limit:
                oldest = _aware(s.scalar(
                    select(func.min(ValidationLogRow.at)).where(ValidationLogRow.key_id == key_id)
                ))
                wait = ((oldest + _HOUR) - when).total_seconds() if oldest else 1.0
                return max(1.0, wait)
            s.add(ValidationLogRow(key_id=key_id, at=when))
        return None

    # -- usage and billing -------------------------------------------------------------------
    def record_usage(
        self,
        key_id: str,
        *,
        service_id: str,
        endpoint: str,
        status_code: int,
        response_time_ms: int,
        predictions_count: int = 0,
        compute_ms: int = 0,
        now: datetime | None = None,
    ) -> None:
        """Store one usage record for an existing key (KeyError if unknown)."""
        with self._session() as s:
            if s.get(ApiKeyRow, str(key_id)) is None:
                raise KeyError(key_id)
            s.add(UsageRow(
                key_id=str(key_id), kind="usage", service_id=service_id, endpoint=endpoint,
                status_code=status_code, response_time_ms=response_time_ms,
                predictions_count=predictions_count, compute_ms=compute_ms, amount=0.0,
                created_at=now or utcnow(),
            ))

    def debit(
        self,
        key_id: str,
        amount: float,
        *,
        service_id: str = "platform",
        endpoint: str = "",
        status_code: int = 0,
        response_time_ms: int = 0,
        predictions_count: int = 1,
        compute_ms: int = 0,
        model_id: str | None = None,
        idempotency_key: str | None = None,
        now: datetime | None = None,
    ) -> DebitResult:
        """Charge ``amount`` to the key's balance and record it (KeyError if the key is unknown).

        Unmetered keys (balance None) accept every debit. A metered key whose balance is below
        ``amount`` is rejected and nothing is recorded. A repeated ``idempotency_key`` is
        accepted without charging again.
        """
        with self._session() as s:
            row = s.get(ApiKeyRow, str(key_id))
            if row is None:
                raise KeyError(key_id)
            if idempotency_key:
                seen = s.scalars(select(UsageRow).where(
                    UsageRow.key_id == row.key_id, UsageRow.idempotency_key == idempotency_key
                )).first()
                if seen is not None:
                    return DebitResult(True, 0.0, row.balance, replay=True)
            if row.balance is not None:
                if row.balance < amount:
                    return DebitResult(False, 0.0, row.balance)
                row.balance = row.balance - amount
            s.add(UsageRow(
                key_id=row.key_id, kind="debit", service_id=service_id, endpoint=endpoint,
                status_code=status_code, response_time_ms=response_time_ms,
                predictions_count=predictions_count, compute_ms=compute_ms, amount=amount,
                model_id=model_id, idempotency_key=idempotency_key, created_at=now or utcnow(),
            ))
            return DebitResult(True, amount, row.balance)

    def summarize(
        self,
        *,
        key_id: str | None = None,
        service_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> UsageSummary:
        """Totals of the usage records matching every given filter (``start <= t < end``)."""
        conds: list[Any] = []
        if key_id is not None:
            conds.append(UsageRow.key_id == str(key_id))
        if service_id is not None:
            conds.append(UsageRow.service_id == service_id)
        if start is not None:
            conds.append(UsageRow.created_at >= start)
        if end is not None:
            conds.append(UsageRow.created_at < end)
        with self._session() as s:
            total, preds, compute, avg_rt, errors, amount = s.execute(
                select(
                    func.count(UsageRow.id),
                    func.coalesce(func.sum(UsageRow.predictions_count), 0),
                    func.coalesce(func.sum(UsageRow.compute_ms), 0),
                    func.coalesce(func.avg(UsageRow.response_time_ms), 0.0),
                    func.coalesce(func.sum(_error_case()), 0),
                    func.coalesce(func.sum(UsageRow.amount), 0.0),
                ).where(*conds)
            ).one()
            top = s.execute(
                select(UsageRow.endpoint, func.count(UsageRow.id).label("n"))
                .where(*conds)
                .group_by(UsageRow.endpoint)
                .order_by(func.count(UsageRow.id).desc(), UsageRow.endpoint)
                .limit(5)
            ).all()
        total = int(total or 0)
        return UsageSummary(
            total_requests=total,
            total_predictions=int(preds or 0),
            total_compute_ms=int(compute or 0),
            average_response_time_ms=float(avg_rt or 0.0),
            error_rate=(int(errors or 0) / total) if total else 0.0,
            top_endpoints=[{"endpoint": ep, "count": int(n)} for ep, n in top],
            total_amount=float(amount or 0.0),
        )

    def distinct_keys_with_usage(
        self, *, service_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """How many keys have usage records matching the filters."""
        stmt = select(func.count(func.distinct(UsageRow.key_id)))
        if service_id is not None:
            stmt = stmt.where(UsageRow.service_id == service_id)
        if start is not None:
            stmt = stmt.where(UsageRow.created_at >= start)
        if end is not None:
            stmt = stmt.where(UsageRow.created_at < end)
        with self._session() as s:
            return int(s.scalar(stmt) or 0)


def _error_case() -> Any:
    return case((UsageRow.status_code >= 400, 1), else_=0)
