"""The auth service's key store: minting, hashing, lifecycle, rate-limit window, usage, debits.

In-memory SQLite (one shared connection); no network, no processes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from pytest_hokusai.stack.keystore import (
    METADATA,
    KeyStore,
    generate_key,
    hash_key,
    key_prefix_of,
)

T0 = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store() -> Iterator[KeyStore]:
    s = KeyStore("sqlite://")
    yield s
    s.close()


@pytest.mark.parametrize(("env", "prefix"), [
    ("production", "hk_live_"), ("test", "hk_test_"), ("development", "hk_dev_"),
    ("live", "hk_live_"), ("dev", "hk_dev_"),
])
def test_generate_key_format(env: str, prefix: str) -> None:
    raw = generate_key(env)
    assert re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9]{32}", raw)
    assert key_prefix_of(raw) == raw[: len(prefix) + 3]


def test_generate_key_rejects_unknown_environment() -> None:
    with pytest.raises(ValueError, match="staging"):
        generate_key("staging")


def test_keys_are_random() -> None:
    assert len({generate_key() for _ in range(50)}) == 50


def test_create_stores_hash_and_lookup_finds_it(store: KeyStore) -> None:
    raw, rec = store.create("k", "platform", scopes=["read"], email="a@b.c", roles=["r"], is_admin=True)
    assert rec.key_prefix == raw[:11]
    assert (rec.scopes, rec.roles, rec.is_admin, rec.email) == (("read",), ("r",), True, "a@b.c")
    found = store.lookup_by_raw(raw)
    assert found is not None and found.key_id == rec.key_id
    assert store.lookup_by_raw(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT key_hash, key_prefix FROM hokusai_api_keys").one()
    assert row[0] == hashlib.sha256(raw.encode()).hexdigest() == hash_key(raw)
    assert raw not in row and raw[8:] not in row[1]


def test_create_rejects_unknown_service(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="ml-platform"):
        store.create("k", "ml-platform")


def test_datetimes_come_back_timezone_aware(store: KeyStore) -> None:
    _, rec = store.create("k", "platform", expires_at=T0 + timedelta(days=1), now=T0)
    got = store.get(rec.key_id)
    assert got is not None
    assert got.created_at == T0 and got.created_at.tzinfo is not None
    assert got.expires_at == T0 + timedelta(days=1)
    assert got.is_expired(T0 + timedelta(days=2)) and not got.is_expired(T0)


def test_revoke_rotate_list(store: KeyStore) -> None:
    raw_a, a = store.create("a", "platform")
    _, b = store.create("b", "website")
    assert [r.name for r in store.list_keys()] == ["a", "b"]
    assert [r.name for r in store.list_keys(service_id="website")] == ["b"]
    rotated = store.rotate(a.key_id)
    assert rotated is not None
    raw_new, new = rotated
    assert new.key_id != a.key_id and raw_new != raw_a and new.name == "a"
    old = store.get(a.key_id)
    assert old is not None and not old.is_active and old.revoked_at is not None
    assert {r.key_id for r in store.list_keys(active_only=True)} == {b.key_id, new.key_id}
    with pytest.raises(ValueError, match="revoked"):
        store.rotate(a.key_id)
    assert store.revoke(b.key_id) is not None
    assert store.revoke("00000000-0000-0000-0000-000000000000") is None
    assert store.rotate("00000000-0000-0000-0000-000000000000") is None
    assert store.count_keys() == (3, 1)


def test_rate_limit_window_slides(store: KeyStore) -> None:
    _, rec = store.create("k", "platform", rate_limit_per_hour=10)
    for i in range(10):
        assert store.note_validation(rec.key_id, 10, now=T0 + timedelta(minutes=i)) is None
    wait = store.note_validation(rec.key_id, 10, now=T0 + timedelta(minutes=30))
    assert wait == pytest.approx(30 * 60)  # the first one leaves the window at T0 + 1 h
    assert store.count_validations_in_last_hour(rec.key_id, now=T0 + timedelta(minutes=30)) == 10
    # one hour and a bit later the first two have left the window
    later = T0 + timedelta(hours=1, minutes=1, seconds=30)
    assert store.count_validations_in_last_hour(rec.key_id, now=later) == 8
    assert store.note_validation(rec.key_id, 10, now=later) is None


def test_usage_summary_by_period(store: KeyStore) -> None:
    _, rec = store.create("k", "platform")
    store.record_usage(rec.key_id, service_id="platform", endpoint="/a", status_code=200,
                       response_time_ms=10, predictions_count=2, compute_ms=5, now=T0)
    store.record_usage(rec.key_id, service_id="platform", endpoint="/a", status_code=500,
                       response_time_ms=30, now=T0)
    store.record_usage(rec.key_id, service_id="website", endpoint="/b", status_code=200,
                       response_time_ms=20, now=T0 - timedelta(days=30))
    march = store.summarize(key_id=rec.key_id, start=datetime(2026, 3, 1, tzinfo=timezone.utc),
                            end=datetime(2026, 4, 1, tzinfo=timezone.utc))
    assert (march.total_requests, march.total_predictions, march.total_compute_ms) == (2, 2, 5)
    assert march.average_response_time_ms == pytest.approx(20.0)
    assert march.error_rate == pytest.approx(0.5)
    assert march.top_endpoints == [{"endpoint": "/a", "count": 2}]
    assert store.summarize(service_id="website").total_requests == 1
    assert store.distinct_keys_with_usage() == 1
    with pytest.raises(KeyError):
        store.record_usage("00000000-0000-0000-0000-000000000000", service_id="platform",
                           endpoint="/", status_code=200, response_time_ms=1)


def test_debit_balance_and_idempotency(store: KeyStore) -> None:
    _, metered = store.create("m", "platform", balance=0.025)
    _, free = store.create("f", "platform")
    assert store.debit(free.key_id, 5.0).accepted  # unmetered
    first = store.debit(metered.key_id, 0.01, idempotency_key="x")
    assert first.accepted and first.balance == pytest.approx(0.015)
    replay = store.debit(metered.key_id, 0.01, idempotency_key="x")
    assert replay.accepted and replay.replay and replay.charged == 0.0
    assert store.debit(metered.key_id, 0.01).accepted
    rejected = store.debit(metered.key_id, 0.01)
    assert not rejected.accepted and rejected.balance == pytest.approx(0.005)
    rec = store.get(metered.key_id)
    assert rec is not None and rec.has_sufficient_balance
    assert store.summarize(key_id=metered.key_id).total_amount == pytest.approx(0.02)


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.psycopg2.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in METADATA.sorted_tables)
    ddl += "\n".join(str(CreateIndex(i).compile(dialect=dialect))
                     for t in METADATA.sorted_tables for i in t.indexes)
    assert "TIMESTAMP WITH TIME ZONE" in ddl and "JSON" in ddl and "BOOLEAN" in ddl
    assert "SERIAL" in ddl  # integer autoincrement ids
    assert "AUTOINCREMENT" not in ddl.upper().replace("SERIAL", "")


def test_postgresql_url_builds_without_connecting() -> None:
    pg = KeyStore("postgresql+psycopg2://hokusai:pw@127.0.0.1:1/hokusai", create_tables=False)
    try:
        assert pg.dialect == "postgresql"
        assert pg.engine.pool.__class__.__name__ == "QueuePool"
    finally:
        pg.close()


def test_tables_exist_after_create(store: KeyStore) -> None:
    names = set(inspect(store.engine).get_table_names())
    assert {"hokusai_api_keys", "hokusai_api_key_usage", "hokusai_api_key_validations"} <= names
