"""The local stack's auth service: every endpoint, good and bad input, every auth fault switch,
hashed storage, and one round trip through a real uvicorn server on a free loopback port.

Most tests use starlette's in-process TestClient (fast); ``test_real_server_*`` go over HTTP.
Key-shaped constants are built at run time, never written out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import socket
import sqlite3
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_hokusai.stack.auth_schemas import WRITE_SCOPES
from pytest_hokusai.stack.auth_service import HTML_503, create_app
from pytest_hokusai.stack.config import STACK_TOKEN_HEADER, AuthServiceConfig
from pytest_hokusai.stack.keystore import KeyStore
from tests.support.postgres import PostgresUnavailable, postgres_server
from tests.support.threadserver import serve_app

with warnings.catch_warnings():
    # starlette 1.x deprecates its httpx-based TestClient at import (wants httpx2); not ours to fix.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

UNKNOWN_KEY = "hk_live_" + "Z" * 32
KEY_RE = re.compile(r"hk_live_[A-Za-z0-9]{32}")


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def admin_token() -> str:
    return "stack-admin-" + secrets.token_urlsafe(16)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "auth" / "keys.db"


def make_client(db_url: str, admin_token: str, faults: list[str] | None = None) -> TestClient:
    config = AuthServiceConfig(db_url=db_url, admin_token=admin_token, faults=faults or [])
    return TestClient(create_app(config))


@pytest.fixture
def client(admin_token: str) -> Iterator[TestClient]:
    """The service on a private in-memory SQLite database (fast; file databases are tested below)."""
    with make_client("sqlite://", admin_token) as c:
        yield c


@pytest.fixture
def file_client(db_path: Path, admin_token: str) -> Iterator[TestClient]:
    """The service on a SQLite file, as the stack runs it."""
    with make_client(f"sqlite:///{db_path}", admin_token) as c:
        yield c


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


def mint(client: TestClient, admin: dict[str, str], **fields: Any) -> tuple[str, dict[str, Any]]:
    body = {"name": "test key", "service_id": "platform", **fields}
    r = client.post("/api/v1/keys", json=body, headers=admin)
    assert r.status_code == 200, r.text
    data = r.json()
    return data["api_key"], data["key_info"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def set_faults(client: TestClient, admin_token: str, *names: str) -> None:
    r = client.put("/_stack/faults", json={"faults": list(names)}, headers={STACK_TOKEN_HEADER: admin_token})
    assert r.status_code == 200, r.text


def assert_422(response: httpx.Response, *loc: str | int) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"loc", "msg", "type"} <= set(item) for item in detail)
    assert list(loc) in [item["loc"] for item in detail], detail


# -- health endpoints --------------------------------------------------------------------------


def test_root_and_health_endpoints(client: TestClient) -> None:
    assert client.get("/").json() == {
        "service": "Hokusai Authentication Service", "version": "1.0.0", "status": "operational"}
    for path in ("/health", "/auth/health"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["status"] == "healthy"
    for path in ("/ready", "/auth/ready"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok"}


SPEC_OPERATIONS = {  # contract/auth_openapi.json: (method, path) -> needs the admin bearer token
    ("get", "/"): False, ("get", "/health"): False, ("get", "/ready"): False, ("get", "/metrics"): False,
    ("get", "/auth/health"): False, ("get", "/auth/ready"): False,
    ("post", "/api/v1/keys"): True, ("get", "/api/v1/keys"): True, ("post", "/api/v1/keys/validate"): False,
    ("get", "/api/v1/keys/{key_id}"): True, ("delete", "/api/v1/keys/{key_id}"): True,
    ("post", "/api/v1/keys/{key_id}/rotate"): True, ("post", "/api/v1/usage/{key_id}"): False,
    ("get", "/api/v1/usage/{key_id}/stats"): True, ("get", "/api/v1/usage/{key_id}/billing"): True,
    ("get", "/api/v1/usage/aggregate"): True,
}


def test_openapi_covers_the_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for (method, path), admin_only in SPEC_OPERATIONS.items():
        op = spec["paths"][path][method]
        assert (op.get("security") == [{"AuthServiceAuth": []}]) is admin_only, (method, path)
    assert "post" in spec["paths"]["/api/v1/usage/{key_id}/debit"]
    assert spec["components"]["schemas"]["APIKeyCreate"]["required"] == ["name", "service_id"]
    assert not any(p.startswith("/_stack") for p in spec["paths"])


def test_metrics_count_keys_and_validations(client: TestClient, admin: dict[str, str]) -> None:
    key, _ = mint(client, admin)
    client.post("/api/v1/keys/validate", json={}, headers=bearer(key))
    client.post("/api/v1/keys/validate", json={"api_key": UNKNOWN_KEY})
    m = client.get("/metrics").json()
    assert (m["keys_total"], m["keys_active"]) == (1, 1)
    assert (m["validations_total"], m["validations_valid"], m["validations_rejected"]) == (2, 1, 1)


def test_ready_is_503_when_the_database_is_unreachable(client: TestClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    broken = KeyStore(f"postgresql+psycopg2://u:p@127.0.0.1:{closed_port}/db?connect_timeout=2",
                      create_tables=False)
    good, client.app.state.store = client.app.state.store, broken
    try:
        r = client.get("/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready" and r.json()["checks"] == {"database": "error"}
        assert client.get("/health").status_code == 200  # liveness does not touch the database
    finally:
        client.app.state.store = good
        broken.close()


# -- keys ----------------------------------------------------------------------------------------


def test_create_key_response_shape(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/api/v1/keys", json={"name": "partner", "service_id": "platform"}, headers=admin)
    assert r.status_code == 200
    data = r.json()
    assert set(data) == {"api_key", "key_info"}
    key, info = data["api_key"], data["key_info"]
    assert KEY_RE.fullmatch(key)
    assert set(info) == {"key_id", "name", "key_prefix", "user_id", "service_id", "scopes", "environment",
                         "is_active", "rate_limit_per_hour", "monthly_prediction_limit", "billing_plan",
                         "created_at", "expires_at", "last_used_at"}
    uuid.UUID(info["key_id"])
    assert info["key_prefix"] == key[:11]
    assert info["scopes"] == ["model:read", "model:write", "mlflow:access"]
    assert (info["environment"], info["billing_plan"], info["rate_limit_per_hour"]) == ("production", "free", 1000)
    assert info["is_active"] is True and info["expires_at"] is None and info["last_used_at"] is None


@pytest.mark.parametrize(("environment", "prefix"), [("test", "hk_test_"), ("development", "hk_dev_")])
def test_create_key_environment_prefix(client: TestClient, admin: dict[str, str], environment: str,
                                       prefix: str) -> None:
    key, info = mint(client, admin, environment=environment)
    assert re.fullmatch(re.escape(prefix) + "[A-Za-z0-9]{32}", key)
    assert info["environment"] == environment


def test_create_key_stack_extensions_show_in_validation(client: TestClient, admin: dict[str, str]) -> None:
    key, info = mint(client, admin, is_admin=True, email="ops@example.org", roles=["registry:admin"],
                     user_id="u-42", balance=12.5, scopes=["read"], expires_in_days=30,
                     rate_limit_per_hour=50, monthly_prediction_limit=7, billing_plan="pro")
    assert info["user_id"] == "u-42" and info["expires_at"] is not None
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert r.status_code == 200
    assert r.json() == {
        "is_valid": True, "key_id": info["key_id"], "user_id": "u-42", "service_id": "platform",
        "scopes": ["read"], "rate_limit_per_hour": 50, "billing_plan": "pro", "monthly_prediction_limit": 7,
        "error": None, "email": "ops@example.org", "roles": ["registry:admin"], "is_admin": True,
        "has_sufficient_balance": True, "balance": 12.5,
    }


@pytest.mark.parametrize(("body", "loc"), [
    ({"service_id": "platform"}, "name"),
    ({"name": "", "service_id": "platform"}, "name"),
    ({"name": "x" * 101, "service_id": "platform"}, "name"),
    ({"name": "k"}, "service_id"),
    ({"name": "k", "service_id": "ml-platform"}, "service_id"),
    ({"name": "k", "service_id": "platform", "environment": "staging"}, "environment"),
    ({"name": "k", "service_id": "platform", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "k", "service_id": "platform", "expires_in_days": 366}, "expires_in_days"),
    ({"name": "k", "service_id": "platform", "rate_limit_per_hour": 9}, "rate_limit_per_hour"),
    ({"name": "k", "service_id": "platform", "rate_limit_per_hour": 100001}, "rate_limit_per_hour"),
    ({"name": "k", "service_id": "platform", "monthly_prediction_limit": -1}, "monthly_prediction_limit"),
    ({"name": "k", "service_id": "platform", "allowed_ips": ["not-an-ip"]}, "allowed_ips"),
    ({"name": "k", "service_id": "platform", "scopes": "read"}, "scopes"),
])
def test_create_key_rejects_bad_input(client: TestClient, admin: dict[str, str], body: dict[str, Any],
                                      loc: str) -> None:
    r = client.post("/api/v1/keys", json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert any(item["loc"][:2] == ["body", loc] for item in r.json()["detail"]), r.json()
    assert client.get("/metrics").json()["keys_total"] == 0


ADMIN_CALLS = [
    ("POST", "/api/v1/keys", {"name": "k", "service_id": "platform"}),
    ("GET", "/api/v1/keys", None),
    ("GET", "/api/v1/keys/{id}", None),
    ("DELETE", "/api/v1/keys/{id}", None),
    ("POST", "/api/v1/keys/{id}/rotate", None),
    ("GET", "/api/v1/usage/{id}/stats", None),
    ("GET", "/api/v1/usage/{id}/billing", None),
    ("GET", "/api/v1/usage/aggregate", None),
]


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic abc", "Bearer "])
def test_admin_endpoints_need_the_admin_token(client: TestClient, admin: dict[str, str], auth: str | None) -> None:
    _, info = mint(client, admin)
    headers = {"Authorization": auth} if auth else {}
    for method, path, body in ADMIN_CALLS:
        r = client.request(method, path.format(id=info["key_id"]), json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == {"detail": "Admin authentication required"}
    keys = client.get("/api/v1/keys", headers=admin).json()
    assert [k["is_active"] for k in keys] == [True]  # nothing was created, revoked or rotated


def test_a_minted_key_is_not_an_admin_token(client: TestClient, admin: dict[str, str]) -> None:
    key, _ = mint(client, admin, is_admin=True)
    assert client.get("/api/v1/keys", headers=bearer(key)).status_code == 401


def test_list_get_and_filters(client: TestClient, admin: dict[str, str]) -> None:
    _, a = mint(client, admin, name="a")
    _, b = mint(client, admin, name="b", service_id="website")
    _, c = mint(client, admin, name="c", expires_in_seconds=0)
    client.delete(f"/api/v1/keys/{a['key_id']}", headers=admin)
    names = [k["name"] for k in client.get("/api/v1/keys", headers=admin).json()]
    assert names == ["a", "b", "c"]
    assert [k["name"] for k in client.get("/api/v1/keys?service_id=website", headers=admin).json()] == ["b"]
    assert [k["name"] for k in client.get("/api/v1/keys?active_only=true", headers=admin).json()] == ["b"]
    got = client.get(f"/api/v1/keys/{b['key_id']}", headers=admin)
    assert got.status_code == 200 and got.json() == b
    assert client.get(f"/api/v1/keys/{uuid.uuid4()}", headers=admin).status_code == 404
    assert_422(client.get("/api/v1/keys/not-a-uuid", headers=admin), "path", "key_id")
    assert c["expires_at"] is not None


def test_revoke(client: TestClient, admin: dict[str, str]) -> None:
    key, info = mint(client, admin)
    r = client.delete(f"/api/v1/keys/{info['key_id']}", headers=admin)
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert client.delete(f"/api/v1/keys/{info['key_id']}", headers=admin).status_code == 200  # idempotent
    assert client.delete(f"/api/v1/keys/{uuid.uuid4()}", headers=admin).status_code == 404
    assert client.get(f"/api/v1/keys/{info['key_id']}", headers=admin).json()["is_active"] is False
    r = client.post("/api/v1/keys/validate", json={}, headers=bearer(key))
    assert r.status_code == 401 and r.json() == {"detail": "API key has been revoked"}


def test_rotate_revokes_the_old_key_and_the_new_one_validates(client: TestClient, admin: dict[str, str]) -> None:
    old_key, old = mint(client, admin, scopes=["read", "write"], rate_limit_per_hour=20)
    r = client.post(f"/api/v1/keys/{old['key_id']}/rotate", headers=admin)
    assert r.status_code == 200
    new_key, new = r.json()["api_key"], r.json()["key_info"]
    assert KEY_RE.fullmatch(new_key) and new_key != old_key and new["key_id"] != old["key_id"]
    assert (new["scopes"], new["rate_limit_per_hour"], new["is_active"]) == (["read", "write"], 20, True)
    old_r = client.post("/api/v1/keys/validate", json={"api_key": old_key})
    assert old_r.status_code == 401 and old_r.json()["detail"] == "API key has been revoked"
    new_r = client.post("/api/v1/keys/validate", json={"api_key": new_key, "service_id": "platform"})
    assert new_r.status_code == 200 and new_r.json()["key_id"] == new["key_id"]
    assert client.post(f"/api/v1/keys/{old['key_id']}/rotate", headers=admin).status_code == 400
    assert client.post(f"/api/v1/keys/{uuid.uuid4()}/rotate", headers=admin).status_code == 404


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bearer-body", "bearer-no-body", "body"])
def test_validate_accepts_bearer_or_body(client: TestClient, admin: dict[str, str], style: str) -> None:
    key, info = mint(client, admin)
    if style == "bearer-body":  # what the platform's middleware sends (contract 2.3)
        r = client.post("/api/v1/keys/validate", json={"service_id": "platform", "client_ip": "203.0.113.9"},
                        headers=bearer(key))
    elif style == "bearer-no-body":
        r = client.post("/api/v1/keys/validate", headers=bearer(key))
    else:  # what the spec and the SDK send
        r = client.post("/api/v1/keys/validate", json={"api_key": key, "service_id": "platform"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["is_valid"] is True and body["error"] is None
    assert (body["key_id"], body["service_id"], body["user_id"]) == (info["key_id"], "platform", "stack-user")
    assert body["has_sufficient_balance"] is True and body["is_admin"] is False


def test_validate_without_service_id_is_fine(client: TestClient, admin: dict[str, str]) -> None:
    key, _ = mint(client, admin, service_id="website")
    r = client.post("/api/v1/keys/validate", json={"api_key": key})
    assert r.status_code == 200 and r.json()["service_id"] == "website"


def test_validate_updates_last_used_at(client: TestClient, admin: dict[str, str]) -> None:
    key, info = mint(client, admin)
    assert client.post("/api/v1/keys/validate", json={"api_key": key}).status_code == 200
    assert client.get(f"/api/v1/keys/{info['key_id']}", headers=admin).json()["last_used_at"] is not None


@pytest.mark.parametrize("case", ["no key", "unknown", "expired", "revoked", "wrong service",
                                  "ip mismatch", "ip of socket peer", "wrong scheme", "missing scope"])
def test_validate_rejects_with_401(client: TestClient, admin: dict[str, str], case: str) -> None:
    fields: dict[str, Any] = {}
    if case == "expired":
        fields["expires_in_seconds"] = 0
    if case in ("ip mismatch", "ip of socket peer"):
        fields["allowed_ips"] = ["10.1.2.3", "192.168.0.0/16"]
    key, info = mint(client, admin, **fields)
    body: dict[str, Any] = {"api_key": key}
    headers: dict[str, str] = {}
    expected = None
    if case == "no key":
        body, expected = {"service_id": "platform"}, "API key required"
    elif case == "unknown":
        body, expected = {"api_key": UNKNOWN_KEY}, "API key not found or invalid"
    elif case == "expired":
        expected = "API key has expired"
    elif case == "revoked":
        client.delete(f"/api/v1/keys/{info['key_id']}", headers=admin)
        expected = "API key has been revoked"
    elif case == "wrong service":
        body["service_id"] = "ml-platform"
        expected = ("API key is registered for service 'platform', not 'ml-platform'. "
                    "Valid service IDs: platform, website, prediction")
    elif case == "ip mismatch":
        body["client_ip"] = "10.1.2.4"
    elif case == "wrong scheme":
        body, headers, expected = {}, {"Authorization": f"Basic {key}"}, "API key required"
    elif case == "missing scope":
        body["required_scope"] = "admin"
    r = client.post("/api/v1/keys/validate", json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"detail"}  # never a 200 with is_valid false (F30)
    if expected:
        assert r.json()["detail"] == expected
    if case.startswith("ip"):
        assert "not allowed" in r.json()["detail"]


@pytest.mark.parametrize("client_ip", ["10.1.2.3", "192.168.7.7"])
def test_validate_allowed_ips_match(client: TestClient, admin: dict[str, str], client_ip: str) -> None:
    key, _ = mint(client, admin, allowed_ips=["10.1.2.3", "192.168.0.0/16"])
    r = client.post("/api/v1/keys/validate", json={"client_ip": client_ip}, headers=bearer(key))
    assert r.status_code == 200


@pytest.mark.parametrize(("body", "loc"), [
    ({"api_key": 5}, ["body", "api_key"]),
    ({"api_key": "x", "service_id": ["platform"]}, ["body", "service_id"]),
    ([1, 2], ["body"]),
])
def test_validate_rejects_malformed_bodies(client: TestClient, body: Any, loc: list[str]) -> None:
    assert_422(client.post("/api/v1/keys/validate", json=body), *loc)


def test_validate_rejects_invalid_json(client: TestClient) -> None:
    r = client.post("/api/v1/keys/validate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_validate_rate_limit_per_hour(client: TestClient, admin: dict[str, str]) -> None:
    key, info = mint(client, admin, rate_limit_per_hour=10)
    other, _ = mint(client, admin, rate_limit_per_hour=10)
    for _ in range(10):
        assert client.post("/api/v1/keys/validate", json={"api_key": key}).status_code == 200
    r = client.post("/api/v1/keys/validate", json={"api_key": key})
    assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
    assert 3500 <= int(r.headers["Retry-After"]) <= 3600
    assert client.post("/api/v1/keys/validate", json={"api_key": other}).status_code == 200  # per key
    assert client.get("/metrics").json()["validations_rate_limited"] == 1
    assert info["rate_limit_per_hour"] == 10


# -- usage and billing -------------------------------------------------------------------------------


def test_usage_record_and_stats(client: TestClient, admin: dict[str, str]) -> None:
    _, info = mint(client, admin)
    kid = info["key_id"]
    for status, ms in ((200, 10), (200, 30), (500, 20)):
        r = client.post(f"/api/v1/usage/{kid}", json={"service_id": "platform", "endpoint": "/api/x",
                                                      "status_code": status, "response_time_ms": ms,
                                                      "predictions_count": 2, "compute_ms": 4})
        assert r.status_code == 200
    stats = client.get(f"/api/v1/usage/{kid}/stats", headers=admin)
    assert stats.status_code == 200
    s = stats.json()
    assert re.fullmatch(r"\d{4}-\d{2}", s["period"]) and s["key_id"] == kid
    assert (s["total_requests"], s["total_predictions"], s["total_compute_ms"]) == (3, 6, 12)
    assert s["average_response_time_ms"] == pytest.approx(20.0)
    assert s["error_rate"] == pytest.approx(1 / 3)
    assert s["top_endpoints"] == [{"endpoint": "/api/x", "count": 3}]
    old = client.get(f"/api/v1/usage/{kid}/stats?period=2001-01", headers=admin).json()
    assert (old["period"], old["total_requests"]) == ("2001-01", 0)


def test_usage_record_rejects_bad_input(client: TestClient, admin: dict[str, str]) -> None:
    _, info = mint(client, admin)
    assert_422(client.post(f"/api/v1/usage/{info['key_id']}", json={"service_id": "platform"}), "body", "endpoint")
    good = {"service_id": "platform", "endpoint": "/", "status_code": 200, "response_time_ms": 1}
    assert client.post(f"/api/v1/usage/{uuid.uuid4()}", json=good).status_code == 404


@pytest.mark.parametrize("period", ["2025-1", "202501", "2025-001", "25-01", "2025-13", "2025-00"])
def test_stats_period_must_be_yyyy_mm(client: TestClient, admin: dict[str, str], period: str) -> None:
    _, info = mint(client, admin)
    assert_422(client.get(f"/api/v1/usage/{info['key_id']}/stats", params={"period": period}, headers=admin),
               "query", "period")


def test_billing(client: TestClient, admin: dict[str, str]) -> None:
    _, info = mint(client, admin, monthly_prediction_limit=3, billing_plan="pro")
    client.post(f"/api/v1/usage/{info['key_id']}", json={"service_id": "platform", "endpoint": "/p",
                                                         "status_code": 200, "response_time_ms": 5,
                                                         "predictions_count": 5})
    b = client.get(f"/api/v1/usage/{info['key_id']}/billing", headers=admin)
    assert b.status_code == 200
    data = b.json()
    assert set(data) == {"key_id", "billing_plan", "current_usage", "monthly_limit", "overage_charges",
                         "next_billing_date"}
    assert (data["billing_plan"], data["monthly_limit"]) == ("pro", 3)
    assert data["current_usage"]["total_predictions"] == 5
    assert data["overage_charges"] == pytest.approx(0.002)
    assert data["next_billing_date"].endswith(("-01T00:00:00Z", "-01T00:00:00+00:00"))
    assert client.get(f"/api/v1/usage/{uuid.uuid4()}/billing", headers=admin).status_code == 404


def test_aggregate(client: TestClient, admin: dict[str, str]) -> None:
    _, a = mint(client, admin)
    _, b = mint(client, admin, service_id="website")
    for info, service in ((a, "platform"), (b, "website"), (b, "website")):
        client.post(f"/api/v1/usage/{info['key_id']}", json={"service_id": service, "endpoint": "/e",
                                                             "status_code": 200, "response_time_ms": 1})
    everything = client.get("/api/v1/usage/aggregate", headers=admin).json()
    assert (everything["total_requests"], everything["active_keys"]) == (3, 2)
    web = client.get("/api/v1/usage/aggregate", params={"service_id": "website"}, headers=admin).json()
    assert web["total_requests"] == 2
    future = client.get("/api/v1/usage/aggregate", params={"start_date": "2999-01-01T00:00:00Z"},
                        headers=admin).json()
    assert future["total_requests"] == 0
    assert_422(client.get("/api/v1/usage/aggregate", params={"end_date": "yesterday"}, headers=admin),
               "query", "end_date")


def test_debit_and_payment_required(client: TestClient, admin: dict[str, str]) -> None:
    key, info = mint(client, admin, balance=0.02)
    kid = info["key_id"]
    body = {"model_id": "21", "endpoint": "/api/v1/models/21/predict", "service_id": "platform",
            "idempotency_key": f"{kid}-1", "predictions_count": 1}
    first = client.post(f"/api/v1/usage/{kid}/debit", json=body)
    assert first.status_code == 200 and first.json()["balance"] == pytest.approx(0.01)
    replay = client.post(f"/api/v1/usage/{kid}/debit", json=body)
    assert replay.json()["idempotent_replay"] is True and replay.json()["balance"] == pytest.approx(0.01)
    second = client.post(f"/api/v1/usage/{kid}/debit", json={**body, "idempotency_key": f"{kid}-2"})
    assert second.status_code == 200 and second.json()["balance"] == pytest.approx(0.0)
    r = client.post(f"/api/v1/usage/{kid}/debit", json={**body, "idempotency_key": f"{kid}-3"})
    assert r.status_code == 402
    assert r.json()["detail"]["error"] == "insufficient_settled_balance"
    assert r.json()["detail"]["message"] == "Insufficient balance"
    v = client.post("/api/v1/keys/validate", json={"api_key": key}).json()
    assert (v["has_sufficient_balance"], v["balance"]) == (False, 0.0)
    assert client.post(f"/api/v1/usage/{uuid.uuid4()}/debit", json=body).status_code == 404
    assert_422(client.post(f"/api/v1/usage/{kid}/debit", json={"predictions_count": -1}),
               "body", "predictions_count")


def test_unmetered_keys_accept_debits(client: TestClient, admin: dict[str, str]) -> None:
    _, info = mint(client, admin)
    r = client.post(f"/api/v1/usage/{info['key_id']}/debit", json={"predictions_count": 100})
    assert r.status_code == 200 and r.json()["balance"] is None and r.json()["charged"] == pytest.approx(1.0)


# -- fault switches ------------------------------------------------------------------------------------


def test_fault_control_needs_the_stack_token(client: TestClient, admin_token: str) -> None:
    assert client.get("/_stack/faults").status_code == 403
    assert client.get("/_stack/faults", headers={STACK_TOKEN_HEADER: "nope"}).status_code == 403
    assert client.get("/_stack/faults", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 403
    assert client.put("/_stack/faults", json={"faults": ["auth-down"]}).status_code == 403
    assert client.get("/health").status_code == 200
    r = client.get("/_stack/faults", headers={STACK_TOKEN_HEADER: admin_token})
    assert r.status_code == 200 and r.json()["faults"] == []


def test_fault_control_validates_names(client: TestClient, admin_token: str) -> None:
    token = {STACK_TOKEN_HEADER: admin_token}
    r = client.put("/_stack/faults", json={"faults": ["auth-down", "no-such-fault"]}, headers=token)
    assert r.status_code == 422 and "no-such-fault" in r.json()["detail"]
    assert_422(client.put("/_stack/faults", json={"faults": "auth-down"}, headers=token), "body", "faults")
    assert client.get("/_stack/faults", headers=token).json()["faults"] == []
    set_faults(client, admin_token, "strip-auth", "write-scope")  # api faults are accepted, no effect here
    got = client.get("/_stack/faults", headers=token).json()
    assert got == {"faults": ["strip-auth", "write-scope"], "effective": ["write-scope"]}


def test_initial_faults_come_from_the_config(admin_token: str) -> None:
    with make_client("sqlite://", admin_token, faults=["auth-down"]) as c:
        assert c.get("/health").status_code == 503
    with pytest.raises(ValueError, match="bogus"):
        make_client("sqlite://", admin_token, faults=["bogus"])


def test_fault_auth_down(client: TestClient, admin: dict[str, str], admin_token: str) -> None:
    key, _ = mint(client, admin)
    set_faults(client, admin_token, "auth-down")
    for method, path in (("GET", "/health"), ("GET", "/auth/health"), ("GET", "/"), ("GET", "/ready"),
                         ("POST", "/api/v1/keys/validate"), ("GET", "/api/v1/keys"), ("GET", "/nowhere")):
        r = client.request(method, path, headers={**admin, **bearer(key)} if "keys" in path else {})
        assert r.status_code == 503, path
        assert r.headers["content-type"].startswith("text/html")
        assert r.text == HTML_503
    # the launcher's own requests (stack token) and the control endpoints still work
    assert client.get("/health", headers={STACK_TOKEN_HEADER: admin_token}).status_code == 200
    set_faults(client, admin_token)
    assert client.get("/health").status_code == 200


def test_fault_auth_misrouted(client: TestClient, admin: dict[str, str], admin_token: str) -> None:
    key, _ = mint(client, admin)
    set_faults(client, admin_token, "auth-misrouted")
    assert client.get("/health").status_code == 200
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert r.status_code == 404 and r.text == "Not Found"
    assert r.headers["content-type"].startswith("text/plain")
    assert client.post("/api/v1/keys", json={"name": "k", "service_id": "platform"}, headers=admin).status_code == 200


def test_fault_auth_body_only(client: TestClient, admin: dict[str, str], admin_token: str) -> None:
    key, _ = mint(client, admin)
    set_faults(client, admin_token, "auth-body-only")
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert_422(r, "body", "api_key")
    assert r.json()["detail"][0]["msg"] == "Field required"
    assert client.post("/api/v1/keys/validate", json={"api_key": key, "service_id": "platform"}).status_code == 200
    assert client.post("/api/v1/keys/validate", json={"api_key": UNKNOWN_KEY}).status_code == 401


def test_fault_rate_limited(client: TestClient, admin: dict[str, str], admin_token: str) -> None:
    key, _ = mint(client, admin)
    set_faults(client, admin_token, "rate-limited")
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert r.status_code == 429 and r.json() == {"detail": "Rate limit exceeded"}
    assert r.headers["Retry-After"] == "60"
    assert client.get("/health").status_code == 200


def test_fault_payment_required(client: TestClient, admin: dict[str, str], admin_token: str) -> None:
    key, info = mint(client, admin, balance=100.0)
    set_faults(client, admin_token, "payment-required")
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert r.status_code == 200 and r.json()["is_valid"] is True
    assert (r.json()["has_sufficient_balance"], r.json()["balance"]) == (False, 0.0)
    assert client.post(f"/api/v1/usage/{info['key_id']}/debit", json={}).status_code == 402


@pytest.mark.parametrize(("scopes", "left"), [
    (["model:read", "model:write", "mlflow:access"], ["model:read"]),
    (["read", "write"], ["read"]),
    (sorted(WRITE_SCOPES), ["read"]),
    ([], ["read"]),
])
def test_fault_write_scope(client: TestClient, admin: dict[str, str], admin_token: str, scopes: list[str],
                           left: list[str]) -> None:
    key, _ = mint(client, admin, scopes=scopes)
    set_faults(client, admin_token, "write-scope")
    r = client.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
    assert r.status_code == 200 and r.json()["scopes"] == left
    set_faults(client, admin_token)
    assert client.post("/api/v1/keys/validate", json={"api_key": key}).json()["scopes"] == scopes


# -- secrets at rest and in logs -----------------------------------------------------------------------


def test_storage_holds_no_raw_key(file_client: TestClient, admin: dict[str, str], db_path: Path) -> None:
    client = file_client
    key, info = mint(client, admin)
    rotated = client.post(f"/api/v1/keys/{info['key_id']}/rotate", headers=admin).json()["api_key"]
    client.post("/api/v1/keys/validate", json={"api_key": rotated})
    raws = [key, rotated]
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = [str(v) for t in tables for row in db.execute(f'SELECT * FROM "{t}"') for v in row]
        hashes = {h for (h,) in db.execute("SELECT key_hash FROM hokusai_api_keys")}
    assert cells
    for raw in raws:
        assert not any(raw[8:] in cell for cell in cells)  # neither the key nor its secret part
    assert hashes == {hashlib.sha256(r.encode()).hexdigest() for r in raws}
    blob = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert not any(raw[8:].encode() in blob for raw in raws)


def test_logs_hold_no_raw_key(client: TestClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key, info = mint(client, admin, rate_limit_per_hour=10)
    client.post("/api/v1/keys/validate", json={"api_key": key, "service_id": "website"})
    client.post("/api/v1/keys/validate", json={"api_key": UNKNOWN_KEY})
    new = client.post(f"/api/v1/keys/{info['key_id']}/rotate", headers=admin).json()["api_key"]
    client.delete(f"/api/v1/keys/{info['key_id']}", headers=admin)
    assert "created key" in caplog.text and "rejected" in caplog.text
    for raw in (key, new, UNKNOWN_KEY):
        assert raw[8:] not in caplog.text


# -- through a real server -------------------------------------------------------------------------------


def serve(app: Any) -> Any:
    """Run ``app`` under uvicorn in a thread on a free loopback port; always stop it."""
    return serve_app(app)


def test_real_server_round_trip(db_path: Path, admin_token: str) -> None:
    app = create_app(AuthServiceConfig(db_url=f"sqlite:///{db_path}", admin_token=admin_token))
    admin = {"Authorization": f"Bearer {admin_token}"}
    with serve(app) as base, httpx.Client(base_url=base, timeout=5.0) as http:
        assert http.get("/health").json()["status"] == "healthy"
        assert http.get("/ready").status_code == 200
        made = http.post("/api/v1/keys", json={"name": "real", "service_id": "platform",
                                               "allowed_ips": ["127.0.0.1"]}, headers=admin)
        assert made.status_code == 200
        key, kid = made.json()["api_key"], made.json()["key_info"]["key_id"]
        # no client_ip in the body: the socket peer (127.0.0.1) is checked against allowed_ips
        ok = http.post("/api/v1/keys/validate", json={"service_id": "platform"}, headers=bearer(key))
        assert ok.status_code == 200 and ok.json()["key_id"] == kid
        wrong = http.post("/api/v1/keys/validate", json={"service_id": "ml-platform"}, headers=bearer(key))
        assert wrong.status_code == 401 and "'platform'" in wrong.json()["detail"]
        put = http.put("/_stack/faults", json={"faults": ["auth-down"]}, headers={STACK_TOKEN_HEADER: admin_token})
        assert put.status_code == 200
        down = http.get("/health")
        assert down.status_code == 503 and down.headers["content-type"].startswith("text/html")
        http.put("/_stack/faults", json={"faults": []}, headers={STACK_TOKEN_HEADER: admin_token})
        assert http.delete(f"/api/v1/keys/{kid}", headers=admin).status_code == 200
        gone = http.post("/api/v1/keys/validate", json={"api_key": key})
        assert gone.status_code == 401 and gone.json()["detail"] == "API key has been revoked"


def test_real_server_peer_ip_outside_allowed_ips(db_path: Path, admin_token: str) -> None:
    app = create_app(AuthServiceConfig(db_url=f"sqlite:///{db_path}", admin_token=admin_token))
    with serve(app) as base, httpx.Client(base_url=base, timeout=5.0) as http:
        key = http.post("/api/v1/keys", json={"name": "lan", "service_id": "platform", "allowed_ips": ["10.0.0.0/8"]},
                        headers={"Authorization": f"Bearer {admin_token}"}).json()["api_key"]
        r = http.post("/api/v1/keys/validate", headers=bearer(key))
        assert r.status_code == 401 and "127.0.0.1" in r.json()["detail"]


# -- the same service on a real PostgreSQL (skipped when PostgreSQL is not installed) --------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (:mod:`tests.support.postgres`): its ``postgres`` database."""
    try:
        with postgres_server() as pg:
            yield pg.url()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_service_on_postgresql(postgres_url: str, admin_token: str) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    with make_client(postgres_url, admin_token) as client:
        assert client.get("/ready").json()["checks"] == {"database": "ok"}
        key, info = mint(client, admin, rate_limit_per_hour=10, allowed_ips=["10.0.0.0/8"], roles=["r"],
                         expires_in_days=1, balance=0.01)
        kid = info["key_id"]
        ok = client.post("/api/v1/keys/validate", json={"service_id": "platform", "client_ip": "10.9.9.9"},
                         headers=bearer(key))
        assert ok.status_code == 200 and ok.json()["roles"] == ["r"]
        assert client.post("/api/v1/keys/validate", json={"api_key": key, "service_id": "website"}).status_code == 401
        for _ in range(9):
            client.post("/api/v1/keys/validate", json={"api_key": key, "client_ip": "10.0.0.1"})
        assert client.post("/api/v1/keys/validate", json={"api_key": key, "client_ip": "10.0.0.1"}).status_code == 429
        client.post(f"/api/v1/usage/{kid}", json={"service_id": "platform", "endpoint": "/x", "status_code": 200,
                                                  "response_time_ms": 3, "predictions_count": 1})
        assert client.get(f"/api/v1/usage/{kid}/stats", headers=admin).json()["total_requests"] == 1
        assert client.post(f"/api/v1/usage/{kid}/debit", json={}).status_code == 200
        assert client.post(f"/api/v1/usage/{kid}/debit", json={}).status_code == 402
        got = client.get(f"/api/v1/keys/{kid}", headers=admin).json()
        assert got["last_used_at"] is not None and got["expires_at"].endswith(("Z", "+00:00"))
        new_key = client.post(f"/api/v1/keys/{kid}/rotate", headers=admin).json()["api_key"]
        assert client.post("/api/v1/keys/validate", json={"api_key": new_key, "client_ip": "10.1.1.1"}).status_code == 200
        assert client.get("/api/v1/keys?active_only=true", headers=admin).json()[0]["name"] == info["name"]
        with client.app.state.store.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT * FROM hokusai_api_keys").all()
        assert len(rows) == 2
        assert not any(raw[8:] in str(cell) for row in rows for cell in row for raw in (key, new_key))
