"""AuthClient against a pytest-httpserver imitation of the auth service; the ValidationResult schema."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pytest_hokusai.auth import (
    VALIDATE_PATH,
    VALIDATION_RESULT_SCHEMA,
    AuthClient,
    check_validation_result,
    parse_registered_service,
    parse_valid_service_ids,
)
from pytest_hokusai.evidence import Recorder
from pytest_hokusai.http import HokusaiSession
from pytest_hokusai.secret import Secret

RAW_KEY = "hk_live_" + "K3" * 14 + "wxyz"
MASKED = "hk_live_\u2026wxyz"
GOOD_RESULT: dict[str, Any] = {
    "is_valid": True, "key_id": "6f1c2d1e-0000-4000-8000-000000000001", "user_id": "admin",
    "service_id": "platform", "scopes": ["read", "write"], "rate_limit_per_hour": 1000,
    "billing_plan": "free", "monthly_prediction_limit": None, "error": None,
}


@pytest.fixture
def key() -> Secret:
    return Secret(RAW_KEY, source="test")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(httpserver: HTTPServer, recorder: Recorder, key: Secret) -> Iterator[AuthClient]:
    session = HokusaiSession(timeout=2.0, recorder=recorder, key=key)
    yield AuthClient(httpserver.url_for("/").rstrip("/"), session, service_id="platform")
    session.close()


def imitation(request: Request) -> Response:
    """Accept the key as Bearer or body api_key; check service_id against 'platform' (contract 2.2)."""
    body = request.get_json(silent=True) or {}
    auth = request.headers.get("Authorization", "")
    presented = auth[len("Bearer "):] if auth.startswith("Bearer ") else body.get("api_key")
    if not presented:
        return Response(json.dumps({"detail": "API key required"}), status=401, content_type="application/json")
    if presented != RAW_KEY:
        return Response(json.dumps({"detail": "API key not found or invalid"}), status=401,
                        content_type="application/json")
    sid = body.get("service_id")
    if sid is not None and sid != "platform":
        detail = (f"Invalid service_id '{sid}': this API key is registered for service 'platform'. "
                  "Valid service IDs: platform, website, prediction")
        return Response(json.dumps({"detail": detail}), status=401, content_type="application/json")
    return Response(json.dumps(GOOD_RESULT), content_type="application/json")


def sent(httpserver: HTTPServer) -> tuple[dict[str, Any], Any]:
    request, _ = httpserver.log[-1]
    return dict(request.headers), request.get_json(silent=True)


def test_header_style_matches_the_middleware(httpserver: HTTPServer, client: AuthClient, recorder: Recorder,
                                             key: Secret) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_handler(imitation)
    outcome = client.validate(key, style="header", client_ip="10.0.0.7")
    headers, body = sent(httpserver)
    assert headers["Authorization"] == f"Bearer {RAW_KEY}"
    assert headers["Content-Type"] == "application/json"
    assert body == {"service_id": "platform", "client_ip": "10.0.0.7"}
    assert outcome.ok and outcome.status == 200 and outcome.result == GOOD_RESULT
    assert outcome.exchange.auth == f"Bearer {MASKED}"
    assert outcome.service_id == "platform" and outcome.registered_service is None
    assert RAW_KEY not in json.dumps([e.to_dict() for e in recorder.all()])


def test_body_style_matches_the_spec(httpserver: HTTPServer, client: AuthClient, key: Secret) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_handler(imitation)
    outcome = client.validate(key, style="body")
    headers, body = sent(httpserver)
    assert "Authorization" not in headers
    assert body == {"api_key": RAW_KEY, "service_id": "platform"}
    assert list(body) == ["api_key", "service_id"]
    assert outcome.ok and outcome.exchange.auth == f"body api_key={MASKED}"


@pytest.mark.parametrize("style", ["header", "body"])
def test_service_id_none_is_omitted(httpserver: HTTPServer, client: AuthClient, key: Secret, style: str) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_handler(imitation)
    outcome = client.validate(key, style=style, service_id=None)  # type: ignore[arg-type]
    _, body = sent(httpserver)
    assert "service_id" not in body
    assert outcome.ok and outcome.service_id is None
    assert "no-service-id" in (outcome.exchange.label or "")


def test_wrong_service_id_names_the_registered_service(httpserver: HTTPServer, client: AuthClient,
                                                       key: Secret) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_handler(imitation)
    outcome = client.validate(key, style="body", service_id="ml-platform")
    assert outcome.status == 401 and not outcome.ok
    assert outcome.detail is not None and "ml-platform" in outcome.detail
    assert outcome.registered_service == "platform"
    assert outcome.valid_service_ids == ["platform", "website", "prediction"]
    assert "service_id 'ml-platform'" in outcome.summary()


def test_no_key_and_unknown_key(httpserver: HTTPServer, client: AuthClient) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_handler(imitation)
    outcome = client.validate(None)
    headers, _ = sent(httpserver)
    assert "Authorization" not in headers
    assert outcome.status == 401 and outcome.detail == "API key required" and outcome.exchange.auth == "none"
    other = Secret("hk_live_" + "Z" * 32)
    outcome = client.validate(other, style="body")
    assert outcome.detail == "API key not found or invalid" and outcome.registered_service is None


def test_lenient_200_with_is_valid_false(httpserver: HTTPServer, client: AuthClient, key: Secret) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_json({"is_valid": False})
    outcome = client.validate(key)
    assert outcome.status == 200 and not outcome.ok and outcome.accepted_by_middleware


def test_html_answer_is_explained(httpserver: HTTPServer, client: AuthClient, key: Secret) -> None:
    httpserver.expect_request(VALIDATE_PATH, method="POST").respond_with_data(
        "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", status=503,
        content_type="text/html")
    outcome = client.validate(key)
    assert outcome.status == 503 and outcome.result is None
    assert outcome.problem is not None and "text/html" in outcome.problem
    assert outcome.detail is not None and "503 Service Temporarily Unavailable" in outcome.detail


def test_unreachable_auth_service_does_not_raise(recorder: Recorder, key: Secret) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = HokusaiSession(timeout=1.0, recorder=recorder, key=key)
    client = AuthClient(f"http://127.0.0.1:{port}", session)
    outcome = client.validate(key)
    assert outcome.status is None and outcome.error == "refused" and not outcome.ok
    assert client.health().exchange.error == "refused"
    session.close()


def test_health(httpserver: HTTPServer, client: AuthClient) -> None:
    httpserver.expect_request("/health").respond_with_json({"status": "healthy"})
    result = client.health()
    assert result.status == 200 and result.json == {"status": "healthy"}
    headers, _ = sent(httpserver)
    assert "Authorization" not in headers


def test_validate_rejects_unknown_style(client: AuthClient, key: Secret) -> None:
    with pytest.raises(ValueError, match="style"):
        client.validate(key, style="query")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("Invalid service_id 'ml-platform'; key is registered for service 'platform'", "platform"),
        ("API key registered to service \"website\", not 'prediction'", "website"),
        ("Key's service_id is prediction", "prediction"),
        ("Service mismatch: the key belongs to service `platform`", "platform"),
        ("This key is only valid for the website service", "website"),
        ("Registered service: platform. Valid IDs: platform, website, prediction-api, ml-platform", "platform"),
        ({"detail": "Invalid", "registered_service_id": "platform"}, "platform"),
        ({"message": "registered for service 'website'"}, "website"),
        ("Invalid or expired API key", None),
        ("API key not found or invalid", None),
        (["not", "text"], None),
        (None, None),
    ],
)
def test_parse_registered_service(detail: Any, expected: str | None) -> None:
    assert parse_registered_service(detail) == expected


def test_parse_valid_service_ids() -> None:
    assert parse_valid_service_ids("Valid IDs: platform, website, prediction-api, ml-platform") == [
        "platform", "website", "prediction-api", "ml-platform"]
    assert parse_valid_service_ids({"valid_service_ids": ["platform"]}) == ["platform"]
    assert parse_valid_service_ids("Invalid or expired API key") == []


# -- the schema ------------------------------------------------------------------------------------
def test_schema_lists_the_contract_fields() -> None:
    assert VALIDATION_RESULT_SCHEMA["required"] == ["is_valid"]
    assert set(VALIDATION_RESULT_SCHEMA["properties"]) == {
        "is_valid", "key_id", "user_id", "service_id", "scopes", "rate_limit_per_hour", "billing_plan",
        "monthly_prediction_limit", "error"}


def test_good_results_have_no_problems() -> None:
    assert check_validation_result(GOOD_RESULT) == []
    assert check_validation_result({"is_valid": False}) == []
    assert check_validation_result({**GOOD_RESULT, "email": "a@b.c", "roles": [], "is_admin": True}) == []


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([], "a ValidationResult must be a JSON object, got array"),
        ({"key_id": "x"}, "missing required field is_valid"),
        ({"is_valid": "true"}, "is_valid must be boolean, got string"),
        ({"is_valid": 1}, "is_valid must be boolean, got integer"),
        ({"is_valid": True, "scopes": "read"}, "scopes must be array or null, got string"),
        ({"is_valid": True, "scopes": ["read", 3]}, "scopes[1] must be string, got integer"),
        ({"is_valid": True, "rate_limit_per_hour": "1000"}, "rate_limit_per_hour must be integer or null, got string"),
        ({"is_valid": True, "rate_limit_per_hour": True}, "rate_limit_per_hour must be integer or null, got boolean"),
        ({"is_valid": True, "monthly_prediction_limit": 1.5},
         "monthly_prediction_limit must be integer or null, got number"),
        ({"is_valid": True, "user_id": 7}, "user_id must be string or null, got integer"),
    ],
)
def test_bad_results_are_explained(obj: Any, problem: str) -> None:
    assert problem in check_validation_result(obj)
