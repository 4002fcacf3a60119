"""The stack's SDK registration-event route (contract section 4, F28), over real HTTP on the local stack:
auth middleware first, then the write scope, then the payload as the platform validates it; accepted
events are recorded for tests to read; the two event faults answer as the platform did."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from pytest_hokusai.stack.events import EVENT_PATHS

#: The payload register_tokenized_model builds (hokusai/core/notification.py), for a runs:/ model URI.
PAYLOAD: dict[str, Any] = {
    "model_name": "hokusai-canary-sdk", "version": "3", "token_id": "HOKUSAI-CHECK-1A2B3C4D",
    "proposal_identifier": "HOKUSAI-CHECK-1A2B3C4D", "metric_name": "accuracy", "baseline_value": 0.9,
    "mlflow_run_id": "0123456789abcdef0123456789abcdef", "model_uri": "models:/hokusai-canary-sdk/3",
    "tags": {"hokusai_token_id": "HOKUSAI-CHECK-1A2B3C4D", "benchmark_metric": "accuracy", "benchmark_value": "0.9",
             "hokusai_status": "registered"},
    "unknown_field": "ignored, as the platform's schema does",
}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: Any, key: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if key is not None:
        request.add_header("Authorization", f"Bearer {key.reveal()}")
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def keys(stack: Any) -> dict[str, Any]:
    return {"write": stack.mint_key(scopes=("read", "write"), name="events write key"),
            "read": stack.mint_key(scopes=("read",), name="events read-only key")}


@pytest.mark.parametrize("path", EVENT_PATHS)
def test_event_is_accepted_answered_and_recorded(healthy_stack: Any, keys: dict[str, Any], path: str) -> None:
    before = len(healthy_stack.registration_events())
    status, body = post(healthy_stack.api_url + path, PAYLOAD, keys["write"])
    assert status == 200, body
    assert body == {"status": "ok", "model_id": "hokusai-canary-sdk/3/HOKUSAI-CHECK-1A2B3C4D",
                    "model_name": "hokusai-canary-sdk", "version": "3", "event_emitted": True, "detail": None}
    events = healthy_stack.registration_events()
    assert len(events) == before + 1
    event = events[-1]
    assert event["path"] == path and event["model_id"] == body["model_id"] and event["key_id"]
    expected = {k: v for k, v in PAYLOAD.items() if k != "unknown_field"}
    assert event["payload"] == expected


def test_no_key_is_the_middlewares_401(healthy_stack: Any) -> None:
    assert post(healthy_stack.api_url + EVENT_PATHS[0], PAYLOAD) == (401, {"detail": "API key required"})


def test_read_only_key_gets_the_platforms_403_before_any_payload_check(healthy_stack: Any,
                                                                        keys: dict[str, Any]) -> None:
    forbidden = (403, {"detail": "Insufficient permissions for model registration events"})
    assert post(healthy_stack.api_url + EVENT_PATHS[0], PAYLOAD, keys["read"]) == forbidden
    assert post(healthy_stack.api_url + EVENT_PATHS[0], {}, keys["read"]) == forbidden


@pytest.mark.parametrize(("field", "value"), [
    ("mlflow_run_id", None),  # what the SDK sends for a model URI that is not runs:/...
    ("model_name", "   "),
    ("baseline_value", "not a number"),
    ("tags", {"benchmark_value": 0.9}),
    ("eval_spec", "x" * 501),
])
def test_payload_is_validated_like_the_platform(healthy_stack: Any, keys: dict[str, Any], field: str,
                                                value: Any) -> None:
    before = len(healthy_stack.registration_events())
    status, body = post(healthy_stack.api_url + EVENT_PATHS[0], {**PAYLOAD, field: value}, keys["write"])
    assert status == 422, body
    assert any(field in [str(p) for p in item.get("loc", [])] for item in body["detail"]), body
    assert len(healthy_stack.registration_events()) == before, "a rejected event is not recorded"


def test_event_faults(healthy_stack: Any, keys: dict[str, Any]) -> None:
    url = healthy_stack.api_url + EVENT_PATHS[0]
    before = len(healthy_stack.registration_events())
    healthy_stack.set_faults(["events-route-missing"])
    assert post(url, PAYLOAD, keys["write"]) == (404, {"detail": "Not Found"})
    assert post(url, {}, keys["write"]) == (404, {"detail": "Not Found"}), "a missing route 404s whatever the body"
    assert post(url, PAYLOAD) == (401, {"detail": "API key required"}), "auth still runs first"
    healthy_stack.set_faults(["events-hook-fails"])
    assert post(url, PAYLOAD, keys["write"]) == (502, {"detail": "Failed to emit model registration event"})
    assert len(healthy_stack.registration_events()) == before
