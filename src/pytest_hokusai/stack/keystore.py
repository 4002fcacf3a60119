"""The local auth service's key store: API keys, usage records and a validation log.

Portable SQLAlchemy 2.x: a SQLite file by default, any SQLAlchemy URL (PostgreSQL included)
works, because the schema uses only portable types (``String``, ``Integer``, ``Float``,
``Boolean``, ``JSON``, ``DateTime(timezone=True)``) and every query is built with the ORM.

Keys are minted and hashed in :mod:`.apikey`; the tables and the values handed out are in
:mod:`.keyschema`. The raw key is returned once by :meth:`KeyStore.create` /
:meth:`KeyStore.rotate` and never kept.

A :class:`KeyStore` is safe to share between threads: each call opens its own session, and a
process-local lock serialises calls (SQLite allows one writer; the rate-limit check-and-log must
be atomic anyway).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, create_engine, delete, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .apikey import (
    ENVIRONMENT_PREFIXES,
    SECRET_LENGTH,
    SERVICE_IDS,
    generate_key,
    hash_key,
    key_prefix_of,
    normalise_environment,
    utcnow,
)
from .keyschema import (
    METADATA,
    ApiKeyRow,
    DebitResult,
    KeyRecord,
    UsageRow,
    UsageSummary,
    ValidationLogRow,
    as_utc,
)

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

_HOUR = timedelta(hours=1)


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
        env = normalise_environment(environment)
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
                oldest = as_utc(s.scalar(
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
