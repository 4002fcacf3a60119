"""Diagnosis rules: every code from its contract tell, precedence, ambiguities, and the triage probes.

Evidence is built by hand from :class:`Exchange` records shaped like what the platform (and the
local reference stack) answers; the probe tests use real HTTP over loopback.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pytest_hokusai.diagnosis import RULES, TriageEvidence, diagnose, finding_for_failure, run_triage
from pytest_hokusai.diagnosis import evidence as ev
from pytest_hokusai.diagnosis.catalog import CODES
from pytest_hokusai.diagnosis.matchers.suite import (
    FACT_SUITE_ERRORS,
    is_deployment_answer,
    suite_error_for_check,
)
from pytest_hokusai.diagnosis.rules import PRECEDENCE
from pytest_hokusai.evidence import Exchange, Recorder
from pytest_hokusai.http import HokusaiSession
from pytest_hokusai.secret import Secret
from pytest_hokusai.settings import HokusaiKeys, HokusaiSettings
from pytest_hokusai.state import Finding

API = "https://registry.example.test"
AUTH = "https://auth.example.test"
TRACKING = API + "/api/mlflow"
DIRECT = API + "/mlflow"
SEARCH = TRACKING + "/api/2.0/mlflow/experiments/search?max_results=1"
VALIDATE = AUTH + "/api/v1/keys/validate"
REST = TRACKING + "/api/2.0/mlflow"
ARTIFACT = TRACKING + "/api/2.0/mlflow-artifacts/artifacts/hokusai-triage/x.txt"

#: Built at run time, never written out literally (see BRIEF).
RAW_KEY = "hk_live_" + "Q7" * 14 + "wxyz"
KEY = Secret(RAW_KEY, source="test")
OTHER = Secret("hk_live_" + "Z9" * 14 + "abcd", source="test (unknown)")
REVOKED = Secret("hk_live_" + "R5" * 14 + "rvkd", source="test (revoked)")
BEARER = f"Bearer {KEY.masked}"

#: DESIGN.md's table: the public interface (code -> category).
DESIGN_CODES = {
    "HOST_UNREACHABLE": "network", "TLS_ERROR": "network",
    "API_SERVICE_DOWN": "deployment", "ROUTE_NOT_CONFIGURED": "deployment",
    "PROXY_ROUTE_NOT_MOUNTED": "deployment", "MLFLOW_PATH_MISMATCH": "deployment",
    "MLFLOW_UNREACHABLE": "deployment", "AUTH_SERVICE_DOWN": "deployment", "AUTH_SERVICE_MISROUTED": "deployment",
    "SERVICE_ID_REJECTED": "configuration", "AUTH_CONTRACT_MISMATCH": "configuration",
    "PROXY_STRIPS_AUTH": "configuration", "ARTIFACTS_DISABLED": "configuration",
    "HOST_HEADER_REJECTED": "configuration",
    "KEY_MISSING": "credentials", "KEY_MALFORMED": "credentials", "KEY_REJECTED": "credentials",
    "KEY_LACKS_WRITE_SCOPE": "credentials", "REGISTRY_ADMIN_REQUIRED": "credentials",
    "PAYMENT_REQUIRED": "credentials", "RATE_LIMITED": "credentials",
    "AUTH_BYPASS": "security", "REVOCATION_DELAYED": "security",
    "CLIENT_TOKEN_LOST": "client", "PROXY_DROPS_REQUEST_BODY": "deployment", "NOT_HOKUSAI_API": "configuration",
    "LATENCY_BUDGET_EXCEEDED": "other", "SUITE_ERROR": "other", "UNEXPECTED_RESPONSE": "other",
}
#: Added by issue 11 (the SDK), after the table's original codes.
DESIGN_CODES |= {"SDK_EVENT_ROUTE_MISSING": "deployment", "SDK_EVENT_REJECTED": "deployment",
                 "SDK_STEP_FAILED": "client"}


# -- building evidence --------------------------------------------------------------------------
def x(method: str, url: str, status: int | None, body: Any = None, *, ctype: str | None = None,
      auth: str = "none", error: str | None = None, headers: dict[str, str] | None = None,
      label: str | None = None) -> Exchange:
    """A hand-made exchange: dict/list bodies become JSON, strings stay text."""
    if isinstance(body, (dict, list)):
        text, default = json.dumps(body), "application/json"
    else:
        text, default = body or "", "text/plain; charset=utf-8"
    return Exchange(method=method, url=url, status=status, content_type=(ctype or default) if status else None,
                    body_excerpt=text, error=error, error_detail=f"{error} detail" if error else None, auth=auth,
                    headers=headers or {}, label=label, elapsed_ms=12.0)


def valid(service: str = "platform", scopes: tuple[str, ...] = ("model:read", "model:write")) -> dict[str, Any]:
    return {"is_valid": True, "key_id": "3f1c", "user_id": "u1", "service_id": service, "scopes": list(scopes),
            "rate_limit_per_hour": 1000, "billing_plan": "free"}


def vauth(style: str) -> str:
    return BEARER if style == "header" else f"body api_key={KEY.masked}"


def validation(e: TriageEvidence, style: str, sid: str | None, status: int | None, body: Any, **kw: Any) -> None:
    e.add_probe(ev.validate_probe_name(style, sid), x("POST", VALIDATE, status, body, auth=vauth(style), **kw))


def all_validations(e: TriageEvidence, status: int | None, body: Any, sids: tuple[str | None, ...] = (None, "platform"),
                    styles: tuple[str, ...] = ("header", "body"), **kw: Any) -> None:
    for sid in sids:
        for style in styles:
            validation(e, style, sid, status, body, **kw)


HTML_503 = "<html><head><title>503 Service Temporarily Unavailable</title></head><body>503</body></html>"


def healthy(service_id: str = "platform") -> TriageEvidence:
    """What a healthy platform answers to every triage probe."""
    e = TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, direct_mlflow_url=DIRECT,
                       service_id=service_id, key_masked=KEY.masked, key_source="env HOKUSAI_API_KEY",
                       revoked_key_masked=REVOKED.masked)
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", 200, {"status": "healthy"}))
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 200, {"status": "healthy"}))
    e.add_probe(ev.MLFLOW_HEALTH, x("GET", DIRECT + "/health", 200, "OK"))
    e.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 401, {"detail": "API key required"}))
    e.add_probe(ev.PROXY_KEY, x("GET", SEARCH, 200, {"experiments": [{"experiment_id": "0"}]}, auth=BEARER))
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 401, {"detail": "Invalid or expired API key"},
                                        auth=f"Bearer {OTHER.masked}"))
    e.add_probe(ev.PROXY_REVOKED_KEY, x("GET", SEARCH, 401, {"detail": "Invalid or expired API key"},
                                        auth=f"Bearer {REVOKED.masked}"))
    all_validations(e, 200, valid(), sids=tuple(dict.fromkeys([None, "platform", service_id])))
    e.add_probe(ev.API_HEALTH_MLFLOW, x("GET", API + "/api/health/mlflow", 200, {"status": "ok"}))
    e.add_probe(ev.EXPERIMENT_CREATE, x("POST", REST + "/experiments/create", 200, {"experiment_id": "7"}, auth=BEARER))
    e.add_probe(ev.EXPERIMENT_DELETE, x("POST", REST + "/experiments/delete", 200, {}, auth=BEARER))
    e.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 200, {}, auth=BEARER))
    e.add_probe(ev.ARTIFACT_GET, x("GET", ARTIFACT, 200, "hokusai triage probe", auth=BEARER))
    e.add_probe(ev.MODEL_CREATE, x("POST", REST + "/registered-models/create", 200,
                                   {"registered_model": {"name": "m"}}, auth=BEARER))
    e.add_probe(ev.MODEL_DELETE, x("DELETE", REST + "/registered-models/delete", 200, {}, auth=BEARER))
    return e


def keyed_everywhere(e: TriageEvidence, status: int, body: Any, **kw: Any) -> None:
    """The same answer to the keyed read and every write (a policy applied to all registry paths)."""
    for name in (ev.PROXY_KEY, ev.EXPERIMENT_CREATE, ev.ARTIFACT_PUT, ev.MODEL_CREATE):
        old = e.probes.get(name)
        if old is None:
            continue
        e.add_probe(name, x(old.method, old.url, status, body, auth=BEARER, **kw))
    for name in (ev.EXPERIMENT_DELETE, ev.ARTIFACT_GET, ev.MODEL_DELETE):
        e.probes.pop(name, None)


def skip_writes(e: TriageEvidence) -> None:
    for name in (*ev.WRITE_PROBES, ev.EXPERIMENT_DELETE, ev.ARTIFACT_GET, ev.MODEL_DELETE):
        e.probes.pop(name, None)
        e.skipped[name] = "the keyed read through the proxy failed"


# -- one scenario per code: the contract's tell ---------------------------------------------------
def s_host_unreachable() -> TriageEvidence:
    e = TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, direct_mlflow_url=DIRECT,
                       key_masked=KEY.masked)
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", None, error="dns"))
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 200, {"status": "healthy"}))
    all_validations(e, 200, valid())
    return e


def s_tls_error() -> TriageEvidence:
    e = TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, direct_mlflow_url=DIRECT,
                       key_masked=KEY.masked)
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", None, error="tls"))
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 200, {"status": "healthy"}))
    return e


def s_api_down() -> TriageEvidence:  # F24, fault api-down
    e = healthy()
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", 503, HTML_503, ctype="text/html"))
    e.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 503, HTML_503, ctype="text/html"))
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 503, HTML_503, ctype="text/html", auth="Bearer x"))
    e.add_probe(ev.PROXY_REVOKED_KEY, x("GET", SEARCH, 503, HTML_503, ctype="text/html", auth="Bearer y"))
    e.add_probe(ev.API_HEALTH_MLFLOW, x("GET", API + "/api/health/mlflow", 503, HTML_503, ctype="text/html"))
    keyed_everywhere(e, 503, HTML_503, ctype="text/html")
    skip_writes(e)
    return e


def s_route_not_configured() -> TriageEvidence:  # F8, fault route-not-configured
    e = healthy()
    e.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 404, "Not Found"))
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 404, "Not Found", auth="Bearer x"))
    e.add_probe(ev.PROXY_REVOKED_KEY, x("GET", SEARCH, 404, "Not Found", auth="Bearer y"))
    keyed_everywhere(e, 404, "Not Found")
    skip_writes(e)
    return e


def s_route_not_mounted() -> TriageEvidence:  # F9, fault route-not-mounted
    e = healthy()
    keyed_everywhere(e, 404, {"detail": "Not Found"})
    skip_writes(e)
    return e


def s_path_mismatch() -> TriageEvidence:  # F12, fault mlflow-path-mismatch
    e = healthy()
    keyed_everywhere(e, 404, {"error_code": "RESOURCE_NOT_FOUND",
                              "message": "The requested resource was not found: experiments/search"})
    skip_writes(e)
    return e


def s_mlflow_unreachable() -> TriageEvidence:  # F14, fault mlflow-unreachable
    e = healthy()
    keyed_everywhere(e, 502, {"detail": "Failed to connect to MLflow server at http://127.0.0.1:9"})
    skip_writes(e)
    e.add_probe(ev.API_HEALTH_MLFLOW, x("GET", API + "/api/health/mlflow", 503,
                                        {"status": "error", "error_type": "ConnectError", "error": "refused"}))
    return e


def s_auth_down() -> TriageEvidence:  # F6, fault auth-down
    e = healthy()
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 503, HTML_503, ctype="text/html"))
    all_validations(e, 503, HTML_503, ctype="text/html")
    keyed_everywhere(e, 503, {"detail": "Authentication service error"}, headers={"retry-after": "1"})
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 503, {"detail": "Authentication service error"},
                                        auth="Bearer x"))
    skip_writes(e)
    return e


def s_auth_misrouted() -> TriageEvidence:  # F7, fault auth-misrouted
    e = healthy()
    all_validations(e, 404, "Not Found")
    keyed_everywhere(e, 503, {"detail": "Authentication service error"})
    skip_writes(e)
    return e


def s_wrong_service_id() -> TriageEvidence:  # F4, fault wrong-service-id (the proxy uses ml-platform)
    e = healthy()
    keyed_everywhere(e, 401, {"detail": "Invalid or expired API key"})
    skip_writes(e)
    return e


def s_auth_body_only() -> TriageEvidence:  # F3, fault auth-body-only (spec-strict auth service)
    e = healthy()
    missing = {"detail": [{"type": "missing", "loc": ["body", "api_key"], "msg": "Field required", "input": None}]}
    all_validations(e, 422, missing, styles=("header",))
    keyed_everywhere(e, 503, {"detail": "Authentication service error"})
    skip_writes(e)
    return e


def s_strip_auth() -> TriageEvidence:  # F2/F20, fault strip-auth
    e = healthy()
    keyed_everywhere(e, 401, {"detail": "API key required"})
    skip_writes(e)
    e.add_probe(ev.API_HEALTH_MLFLOW, x("GET", API + "/api/health/mlflow", 503,
                                        {"status": "error", "error": "401 API key required"}))
    return e


def s_artifacts_disabled() -> TriageEvidence:  # F13a, fault artifacts-disabled
    e = healthy()
    e.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 503, {"detail": {
        "error": "ARTIFACTS_DISABLED", "message": "Artifact storage is not configured."}}, auth=BEARER))
    e.probes.pop(ev.ARTIFACT_GET)
    return e


def s_host_header() -> TriageEvidence:  # F19, fault host-header
    e = healthy()
    keyed_everywhere(e, 403, "Invalid Host header - possible DNS rebinding attack detected")
    skip_writes(e)
    return e


def s_key_missing() -> TriageEvidence:
    return TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, key_state=ev.KEY_MISSING)


def s_key_malformed() -> TriageEvidence:
    return TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, key_state=ev.KEY_MALFORMED,
                          key_problem="the key does not start with hk_live_, hk_test_ or hk_dev_",
                          key_masked="\u2026abcd", key_source="env HOKUSAI_API_KEY")


def s_key_rejected() -> TriageEvidence:  # F5: revoked / unknown / expired
    e = healthy()
    all_validations(e, 401, {"detail": "API key has been revoked"})
    keyed_everywhere(e, 401, {"detail": "Invalid or expired API key"})
    skip_writes(e)
    return e


def s_write_scope() -> TriageEvidence:  # F17, fault write-scope
    e = healthy()
    forbidden = {"detail": "Insufficient permissions for this operation", "error": "FORBIDDEN",
                 "message": "This operation requires write permissions. Your API key has scopes: ['read']. "
                            "Required: 'model:write' or 'mlflow:write'",
                 "required_scope": "model:write or mlflow:write", "current_scopes": ["read"]}
    for name in ev.WRITE_PROBES:
        old = e.probes[name]
        e.add_probe(name, x(old.method, old.url, 403, forbidden, auth=BEARER))
    for name in (ev.EXPERIMENT_DELETE, ev.ARTIFACT_GET, ev.MODEL_DELETE):
        e.probes.pop(name)
    return e


REGISTRY_ADMIN = {"detail": "Admin access required for the model registry", "error": "REGISTRY_ADMIN_REQUIRED"}


def s_registry_admin() -> TriageEvidence:  # F18, fault registry-admin
    e = healthy()
    keyed_everywhere(e, 403, REGISTRY_ADMIN)
    skip_writes(e)
    return e


def s_payment() -> TriageEvidence:  # F21, fault payment-required
    e = healthy()
    keyed_everywhere(e, 402, {"detail": "Insufficient balance"})
    skip_writes(e)
    return e


def s_rate_limited() -> TriageEvidence:  # F22, fault rate-limited
    e = healthy()
    all_validations(e, 429, {"detail": "Rate limit exceeded"}, headers={"retry-after": "60"})
    keyed_everywhere(e, 429, {"detail": "Rate limit exceeded"}, headers={"retry-after": "60"})
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 429, {"detail": "Rate limit exceeded"}, auth="Bearer x"))
    skip_writes(e)
    return e


def s_auth_bypass() -> TriageEvidence:  # fault auth-bypass
    e = healthy()
    e.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 200, {"experiments": []}))
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 200, {"experiments": []}, auth=f"Bearer {OTHER.masked}"))
    e.add_probe(ev.PROXY_REVOKED_KEY, x("GET", SEARCH, 200, {"experiments": []}, auth=f"Bearer {REVOKED.masked}"))
    return e


def s_revocation_delayed() -> TriageEvidence:  # F23, fault revocation-delay (fact from the edge check)
    e = healthy()
    e.add_fact(ev.FACT_REVOCATION_DELAY, 95.0)
    return e


def s_client_token_lost() -> TriageEvidence:  # F15
    e = healthy()
    e.add_exchanges([
        x("POST", REST + "/experiments/create", 200, {"experiment_id": "9"}, auth=BEARER, label="mlflow-client"),
        x("POST", REST + "/registered-models/create", 401, {"detail": "API key required"}, label="mlflow-client"),
    ])
    e.add_fact(ev.FACT_TRACKING_TOKEN_PRESENT, False)
    return e


#: MLflow 3.x's exact answer to a DELETE whose JSON body the proxy dropped (contract section 5).
MISSING_NAME = {"error_code": "INVALID_PARAMETER_VALUE",
                "message": "Missing value for required parameter 'name'. See the API docs for more information "
                           "about request parameters."}


def s_drops_delete_body() -> TriageEvidence:  # section 5, fault drop-delete-body
    e = healthy()
    e.add_probe(ev.MODEL_DELETE, x("DELETE", REST + "/registered-models/delete", 400, MISSING_NAME, auth=BEARER))
    return e


CATCH_ALL = ("<!doctype html><html><head><meta charset=utf-8><title>Hokusai \u2013 Own your AI</title></head>"
             "<body><div id=root></div></body></html>")


def s_not_hokusai_api() -> TriageEvidence:  # --hokusai-api-url at a website whose catch-all answers HTML 200
    e = healthy()
    for name in (ev.API_HEALTH, ev.PROXY_NO_KEY, ev.PROXY_KEY, ev.PROXY_UNKNOWN_KEY, ev.PROXY_REVOKED_KEY,
                 ev.API_HEALTH_MLFLOW, *ev.WRITE_PROBES, ev.ARTIFACT_GET, ev.MODEL_DELETE, ev.EXPERIMENT_DELETE):
        old = e.probes[name]
        e.add_probe(name, x(old.method, old.url, 200, CATCH_ALL, ctype="text/html; charset=utf-8", auth=old.auth))
    return e


AUTH_PERF = "checks/test_perf.py::test_auth_validation_latency"
PROXY_PERF = "checks/test_perf.py::test_proxy_request_latency"


def s_latency() -> TriageEvidence:  # the perf check's fact: key validation over its budget
    e = healthy()
    e.add_latency_miss(ev.latency_miss("auth_validate_ms", p50=2012.0, p95=2105.0, n=20, budget=1000.0,
                                       nodeid=AUTH_PERF))
    return e


def s_unexpected() -> TriageEvidence:
    e = healthy()
    keyed_everywhere(e, 500, {"detail": "Internal server error while proxying to MLflow"})
    skip_writes(e)
    return e


def s_suite_error() -> TriageEvidence:
    """A healthy deployment; two checks crashed by themselves (a warning turned into an error)."""
    e = healthy()
    e.add_fact(FACT_SUITE_ERRORS, [
        ("checks/test_proxy.py::test_discovery_matrix[proxy-api/2.0-key] (in a fixture): PytestWarning: "
        "record_property is incompatible with junit_family 'xunit2' (use 'legacy' or 'xunit1')"),
        ("checks/test_registration.py::test_register_model_end_to_end (in the check): UserWarning: Any type "
        "hint is inferred as AnyType"),
    ])
    return e


SCENARIOS: dict[str, Callable[[], TriageEvidence]] = {
    "HOST_UNREACHABLE": s_host_unreachable, "TLS_ERROR": s_tls_error, "API_SERVICE_DOWN": s_api_down,
    "ROUTE_NOT_CONFIGURED": s_route_not_configured, "PROXY_ROUTE_NOT_MOUNTED": s_route_not_mounted,
    "MLFLOW_PATH_MISMATCH": s_path_mismatch, "MLFLOW_UNREACHABLE": s_mlflow_unreachable,
    "AUTH_SERVICE_DOWN": s_auth_down, "AUTH_SERVICE_MISROUTED": s_auth_misrouted,
    "SERVICE_ID_REJECTED": s_wrong_service_id, "AUTH_CONTRACT_MISMATCH": s_auth_body_only,
    "PROXY_STRIPS_AUTH": s_strip_auth, "ARTIFACTS_DISABLED": s_artifacts_disabled,
    "HOST_HEADER_REJECTED": s_host_header, "KEY_MISSING": s_key_missing, "KEY_MALFORMED": s_key_malformed,
    "KEY_REJECTED": s_key_rejected, "KEY_LACKS_WRITE_SCOPE": s_write_scope,
    "REGISTRY_ADMIN_REQUIRED": s_registry_admin, "PAYMENT_REQUIRED": s_payment, "RATE_LIMITED": s_rate_limited,
    "AUTH_BYPASS": s_auth_bypass, "REVOCATION_DELAYED": s_revocation_delayed,
    "CLIENT_TOKEN_LOST": s_client_token_lost, "LATENCY_BUDGET_EXCEEDED": s_latency,
    "PROXY_DROPS_REQUEST_BODY": s_drops_delete_body, "NOT_HOKUSAI_API": s_not_hokusai_api,
    "UNEXPECTED_RESPONSE": s_unexpected, "SUITE_ERROR": s_suite_error,
}


# -- the SDK (issue 11): the stock client registers, the SDK does not ------------------------------
EVENTS = API + "/api/models/tokenized-registration-events"


def sdk_event(status: int | None, body: Any = None, **kw: Any) -> Exchange:
    return x("POST", EVENTS, status, body, auth=BEARER, label="sdk:registration-event", **kw)


def s_sdk_event_route_missing() -> TriageEvidence:  # F28: an API build without the route
    e = healthy()
    e.add_exchanges([sdk_event(404, {"detail": "Not Found"})])
    return e


def s_sdk_event_rejected() -> TriageEvidence:  # F28: the hook failed
    e = healthy()
    e.add_exchanges([sdk_event(502, {"detail": "Failed to emit model registration event"})])
    return e


def s_sdk_step_failed() -> TriageEvidence:
    e = healthy()
    e.add_fact("sdk_failures", [{"step": "ModelRegistry()", "nodeid": "checks/test_sdk.py::t",
                                 "error": "ValueError: Authentication failed: HOKUSAI_API_KEY is required."}])
    return e


SCENARIOS |= {"SDK_EVENT_ROUTE_MISSING": s_sdk_event_route_missing, "SDK_EVENT_REJECTED": s_sdk_event_rejected,
              "SDK_STEP_FAILED": s_sdk_step_failed}


def test_sdk_event_failures_name_the_step_and_the_answer() -> None:
    missing = primary(diagnose(s_sdk_event_route_missing()))
    assert missing.code == "SDK_EVENT_ROUTE_MISSING"
    assert "registration event POST /api/models/tokenized-registration-events got 404" in missing.summary
    assert "HOKUSAI_API_ENDPOINT=" + API + "/api" in missing.remediation
    hook = primary(diagnose(s_sdk_event_rejected()))
    assert hook.code == "SDK_EVENT_REJECTED" and "Failed to emit model registration event" in hook.summary
    assert "hook" in hook.remediation
    for status, body, said_part, fix_part in (
            (403, {"detail": "Insufficient permissions for model registration events"}, "no write scope",
             "write scope"),
            (422, {"detail": [{"loc": ["body", "mlflow_run_id"], "msg": "must be a non-empty string"}]},
             "rejects the payload", "runs:/")):
        e = healthy()
        e.add_exchanges([sdk_event(status, body)])
        found = primary(diagnose(e))
        assert found.code == "SDK_EVENT_REJECTED" and said_part in found.summary, found
        assert fix_part in found.remediation, found
    # a 429 on the event is the key's rate limit, not the SDK's
    e = healthy()
    e.add_exchanges([sdk_event(429, {"detail": "Rate limit exceeded"}, headers={"Retry-After": "60"})])
    assert primary(diagnose(e)).code == "RATE_LIMITED"


def test_sdk_codes_rank_below_platform_codes() -> None:
    """When the stock client fails too, the platform's code is the root cause, the SDK's only a consequence."""
    e = s_registry_admin()
    e.add_exchanges([sdk_event(404, {"detail": "Not Found"})])
    e.add_fact("sdk_failures", [{"step": "register_tokenized_model (MLflow steps)", "error": "RegistryException: x"}])
    codes = [f.code for f in diagnose(e)]
    assert codes[0] == "REGISTRY_ADMIN_REQUIRED" and "SDK_EVENT_ROUTE_MISSING" in codes
    assert "SDK_STEP_FAILED" not in codes, "the stock client does not register: the SDK step is no finding of its own"
    step = primary(diagnose(s_sdk_step_failed()))
    assert step.code == "SDK_STEP_FAILED" and "ModelRegistry()" in step.summary
    assert "HOKUSAI_API_KEY is required" in step.summary


def test_sdk_fallback_that_moved_the_client_is_client_token_lost() -> None:
    """F15: the token gone and the client moved to localhost:5001, whether or not a request got a 401."""
    e = healthy()
    e.add_fact(ev.FACT_TRACKING_TOKEN_PRESENT, False)
    e.add_fact(ev.FACT_TRACKING_URI_MOVED_TO, "http://localhost:5001")
    found = primary(diagnose(e))
    assert found.code == "CLIENT_TOKEN_LOST" and "http://localhost:5001" in found.summary
    assert "fact: the MLflow client's tracking URI moved to http://localhost:5001" in found.evidence
    e = s_client_token_lost()
    e.add_fact(ev.FACT_TRACKING_URI_MOVED_TO, "http://localhost:5001")
    found = primary(diagnose(e))
    assert found.code == "CLIENT_TOKEN_LOST" and "without a key" in found.summary
    assert any("moved to http://localhost:5001" in line for line in found.evidence)
    # the token kept: a moved URI alone is no lost token
    e = healthy()
    e.add_fact(ev.FACT_TRACKING_TOKEN_PRESENT, True)
    e.add_fact(ev.FACT_TRACKING_URI_MOVED_TO, "http://localhost:5001")
    assert diagnose(e) == []


def primary(findings: list[Finding]) -> Finding:
    primaries = [f for f in findings if f.primary]
    assert len(primaries) == 1, [f"{f.code} primary={f.primary}" for f in findings]
    assert findings[0] is primaries[0], "the primary finding must come first"
    return primaries[0]


def assert_no_raw_key(findings: list[Finding]) -> None:
    for f in findings:
        text = " ".join([f.summary, f.remediation, *f.evidence])
        for raw in (RAW_KEY, RAW_KEY[len("hk_live_"):], OTHER.reveal(), REVOKED.reveal()):
            assert raw not in text, f"{f.code} leaks a raw key"


# -- the table ------------------------------------------------------------------------------------
def test_rules_table_matches_design_codes_and_categories() -> None:
    assert {code: rule.category for code, rule in RULES.items()} == DESIGN_CODES
    assert list(CODES) == list(DESIGN_CODES), "the table keeps DESIGN.md's order"
    assert set(PRECEDENCE) == set(DESIGN_CODES)
    assert PRECEDENCE[-3:] == ("UNEXPECTED_RESPONSE", "SUITE_ERROR", "LATENCY_BUDGET_EXCEEDED"), "the fallbacks rank last"
    for rule in RULES.values():
        assert rule.code and rule.title and rule.symptom and rule.cause and rule.fix and rule.history


def test_every_code_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(DESIGN_CODES)


# -- healthy ---------------------------------------------------------------------------------------
def test_healthy_target_gives_no_findings() -> None:
    assert diagnose(healthy()) == []


def test_healthy_with_configured_service_id_other_than_platform_gives_no_findings() -> None:
    e = healthy(service_id="website")
    for style in ("header", "body"):  # a website key: platform is rejected, omitted and website pass
        validation(e, style, "platform", 401, {"detail": "API key is registered for service 'website'"})
        validation(e, style, None, 200, valid("website"))
        validation(e, style, "website", 200, valid("website"))
    assert diagnose(e) == []


def test_expected_negative_answers_in_checks_are_not_findings() -> None:
    """No-key 401, revoked-key 401, the read-only key's 403 FORBIDDEN, a real 404 are healthy."""
    readonly = Secret("hk_live_" + "P3" * 14 + "read", source="test (readonly)")
    e = healthy()
    e.add_exchanges([
        x("GET", SEARCH, 401, {"detail": "API key required"}, label=None),
        x("GET", SEARCH, 401, {"detail": "Invalid or expired API key"}, auth=f"Bearer {REVOKED.masked}"),
        x("POST", REST + "/experiments/create", 403, {"error": "FORBIDDEN", "current_scopes": ["model:read"]},
          auth=f"Bearer {readonly.masked}"),
        x("GET", REST + "/registered-models/get?name=nope", 404,
          {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=nope not found"},
          auth=BEARER),
        x("POST", VALIDATE, 401, {"detail": "API key is registered for service 'platform', not 'website'"},
          auth=BEARER),
    ])
    assert diagnose(e) == []


def test_exploratory_check_exchanges_do_not_change_the_diagnosis() -> None:
    """The discovery matrix's ajax-api cell through the proxy 404s on a healthy target, and a key sent
    the wrong way ('bearer', Basic) is refused on purpose: neither is a fault, nor outranks one."""
    odd = [
        x("GET", TRACKING + "/ajax-api/2.0/mlflow/experiments/search?max_results=1", 404,
          {"error_code": "RESOURCE_NOT_FOUND", "message": "The requested resource was not found: ajax-api/2.0/x"},
          auth=BEARER, label="check:discovery:proxy:ajax-api/2.0:key"),
        x("GET", SEARCH, 401, {"detail": "API key required"}, auth=f"bearer {KEY.masked}"),
        x("GET", SEARCH, 401, {"detail": "API key required"}, auth=f"Basic {KEY.masked}"),
    ]
    e = healthy()
    e.add_exchanges(odd)
    assert diagnose(e) == []
    e = s_write_scope()
    e.add_exchanges(odd)
    assert [f.code for f in diagnose(e)] == ["KEY_LACKS_WRITE_SCOPE"]


def test_revoked_key_rejected_is_healthy_and_served_within_the_cache_ttl_is_tolerated() -> None:
    assert diagnose(healthy()) == []
    e = healthy()
    e.add_probe(ev.PROXY_REVOKED_KEY, x("GET", SEARCH, 200, {"experiments": []}, auth=f"Bearer {REVOKED.masked}"))
    e.add_fact(ev.FACT_REVOKED_AT, time.time() - 5)  # revoked 5 s ago, platform cache TTL is 60 s
    assert diagnose(e) == []
    e.add_fact(ev.FACT_REVOKED_AT, time.time() - 600)
    assert primary(diagnose(e)).code == "REVOCATION_DELAYED"


# -- every code from its tell -------------------------------------------------------------------
@pytest.mark.parametrize("code", list(SCENARIOS))
def test_each_tell_gives_its_code_as_the_one_primary(code: str) -> None:
    findings = diagnose(SCENARIOS[code]())
    found = primary(findings)
    assert found.code == code, [(f.code, f.summary) for f in findings]
    assert found.category == DESIGN_CODES[code]
    assert found.summary and found.summary.endswith("."), found.summary
    assert found.evidence, "a finding cites its evidence"
    assert found.remediation
    assert_no_raw_key(findings)


def test_service_id_summary_names_the_registered_service_and_the_fix() -> None:
    found = primary(diagnose(s_wrong_service_id()))
    assert "'platform'" in found.summary and "Invalid or expired API key" in found.summary
    assert "AUTH_SERVICE_ID=platform" in found.remediation and "HOKUSAI_AUTH_SERVICE_ID" in found.remediation
    assert any("keys/validate" in line for line in found.evidence)
    assert any("experiments/search" in line for line in found.evidence)


def test_remediations_name_what_to_change_where() -> None:
    assert "MLFLOW_SERVE_ARTIFACTS=true" in primary(diagnose(s_artifacts_disabled())).remediation
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" in primary(diagnose(s_host_header())).remediation
    assert "/api/mlflow/*" in primary(diagnose(s_route_not_configured())).remediation
    assert "model:write" in primary(diagnose(s_write_scope())).remediation
    unreachable = primary(diagnose(s_mlflow_unreachable()))
    assert "MLFLOW_SERVER_URL" in unreachable.remediation and "http://127.0.0.1:9" in unreachable.summary
    assert "60" in primary(diagnose(s_rate_limited())).summary
    assert "95 s" in primary(diagnose(s_revocation_delayed())).summary
    assert "['read']" in primary(diagnose(s_write_scope())).summary or "[read]" in primary(
        diagnose(s_write_scope())).summary


# -- ambiguities the contract warns about -----------------------------------------------------------
def test_f4_not_f3_the_2025_misdiagnosis() -> None:
    """The key validates in both styles with service_id omitted/platform, not with 'ml-platform'."""
    e = healthy(service_id="ml-platform")
    validation(e, "header", "ml-platform", 401, {"detail": "Invalid or expired API key"})
    validation(e, "body", "ml-platform", 401, {
        "detail": "API key is registered for service 'platform', not 'ml-platform'. "
                  "Valid service IDs: platform, website, prediction-api, ml-platform"})
    keyed_everywhere(e, 401, {"detail": "Invalid or expired API key"})
    skip_writes(e)
    findings = diagnose(e)
    found = primary(findings)
    assert found.code == "SERVICE_ID_REJECTED"
    assert "AUTH_CONTRACT_MISMATCH" not in {f.code for f in findings}
    assert "'platform'" in found.summary and "'ml-platform'" in found.summary
    assert "HOKUSAI_SERVICE_ID" in found.remediation and "AUTH_SERVICE_ID" in found.remediation


def test_f3_header_only_failure_with_every_service_id_is_contract_mismatch() -> None:
    e = s_auth_body_only()
    findings = diagnose(e)
    assert primary(findings).code == "AUTH_CONTRACT_MISMATCH"
    assert "SERVICE_ID_REJECTED" not in {f.code for f in findings}
    # a spec-strict service that answers 401 (not 422) to the header: still the contract, not the key
    all_validations(e, 401, {"detail": "API key required"}, styles=("header",))
    keyed_everywhere(e, 401, {"detail": "Invalid or expired API key"})
    assert primary(diagnose(e)).code == "AUTH_CONTRACT_MISMATCH"


def test_f5_rejected_everywhere_is_key_rejected_not_service_id() -> None:
    findings = diagnose(s_key_rejected())
    assert primary(findings).code == "KEY_REJECTED"
    assert {"SERVICE_ID_REJECTED", "AUTH_CONTRACT_MISMATCH"}.isdisjoint(f.code for f in findings)


def test_404_plain_text_vs_json_not_found_vs_resource_not_found() -> None:
    assert primary(diagnose(s_route_not_configured())).code == "ROUTE_NOT_CONFIGURED"  # F8
    assert primary(diagnose(s_route_not_mounted())).code == "PROXY_ROUTE_NOT_MOUNTED"  # F9
    assert primary(diagnose(s_path_mismatch())).code == "MLFLOW_PATH_MISMATCH"  # F12
    f11 = healthy()  # F11: MLflow's own HTML 404 on the static-prefixed REST path, passed through
    keyed_everywhere(f11, 404, "<!doctype html><title>404 Not Found</title>", ctype="text/html")
    skip_writes(f11)
    found = primary(diagnose(f11))
    assert found.code == "MLFLOW_PATH_MISMATCH" and "static-prefix" in found.summary
    lost = primary(diagnose(s_path_mismatch()))
    assert "api/2.0/mlflow" in lost.summary and "strips" in lost.summary
    # only the artifact route 404s while metadata works: artifacts, not the REST path
    art = healthy()
    art.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 404, {"error_code": "RESOURCE_NOT_FOUND", "message":
                  "The requested resource was not found: api/2.0/mlflow-artifacts/artifacts/x"}, auth=BEARER))
    art.probes.pop(ev.ARTIFACT_GET)
    assert primary(diagnose(art)).code == "MLFLOW_PATH_MISMATCH"  # F11: the artifact path is untranslated


def test_details_are_read_from_cut_short_and_structured_bodies() -> None:
    e = s_wrong_service_id()
    cut = json.dumps(valid())[:90] + "\u2026"  # the excerpt stops after service_id
    assert '"service_id": "platform"' in cut
    for style in ("header", "body"):
        validation(e, style, None, 200, cut, ctype="application/json")
        validation(e, style, "platform", 200, cut, ctype="application/json")
    found = primary(diagnose(e))
    assert found.code == "SERVICE_ID_REJECTED" and "registered for 'platform'" in found.summary
    found = primary(diagnose(s_auth_body_only()))
    assert "422 'body.api_key: Field required'" in found.summary


def test_mlflow_without_serve_artifacts_is_artifacts_disabled() -> None:
    e = healthy()
    e.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 503, "Endpoint: /api/2.0/mlflow-artifacts/artifacts/<path> "
                "disabled due to the mlflow server running with `--no-serve-artifacts`.", auth=BEARER))
    e.probes.pop(ev.ARTIFACT_GET)
    found = primary(diagnose(e))
    assert found.code == "ARTIFACTS_DISABLED" and "--serve-artifacts" in found.remediation
    # MLflow's own 404 for an artifact that does not exist is not a disabled route
    e = healthy()
    e.add_exchanges([x("GET", ARTIFACT, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "nope"},
                       auth=BEARER)])
    assert diagnose(e) == []


def test_three_kinds_of_403() -> None:
    assert primary(diagnose(s_write_scope())).code == "KEY_LACKS_WRITE_SCOPE"
    assert primary(diagnose(s_registry_admin())).code == "REGISTRY_ADMIN_REQUIRED"
    assert primary(diagnose(s_host_header())).code == "HOST_HEADER_REJECTED"
    # registry-admin blocks reads too: the 403 on the read names it, never write scope
    codes = {f.code for f in diagnose(s_registry_admin())}
    assert "KEY_LACKS_WRITE_SCOPE" not in codes and "HOST_HEADER_REJECTED" not in codes


def test_api_key_required_with_a_key_is_stripping_without_one_is_the_client() -> None:
    assert primary(diagnose(s_strip_auth())).code == "PROXY_STRIPS_AUTH"
    codes = {f.code for f in diagnose(s_client_token_lost())}
    assert codes == {"CLIENT_TOKEN_LOST"}
    # the client's request carried the key and still got 'API key required': stripping, not the client
    e = healthy()
    e.add_exchanges([x("POST", REST + "/registered-models/create", 401, {"detail": "API key required"},
                       auth=BEARER, label="mlflow-client")])
    assert primary(diagnose(e)).code == "PROXY_STRIPS_AUTH"


def test_auth_down_vs_misrouted_vs_contract() -> None:
    """The proxy says 'Authentication service error' in all three; the direct probes tell them apart."""
    assert primary(diagnose(s_auth_down())).code == "AUTH_SERVICE_DOWN"
    assert primary(diagnose(s_auth_misrouted())).code == "AUTH_SERVICE_MISROUTED"
    assert primary(diagnose(s_auth_body_only())).code == "AUTH_CONTRACT_MISMATCH"
    hang = healthy()  # F7 as observed: validate hangs, the proxy times out after 5 s
    all_validations(hang, None, None, error="timeout")
    keyed_everywhere(hang, 503, {"detail": "Authentication service timeout"})
    skip_writes(hang)
    assert primary(diagnose(hang)).code == "AUTH_SERVICE_MISROUTED"
    schema = healthy()  # F29: health fine, validation 500 from the database
    all_validations(schema, 500, {"detail": "psycopg2.errors.UndefinedTable: relation api_keys"})
    keyed_everywhere(schema, 503, {"detail": "Authentication service error"})
    skip_writes(schema)
    assert primary(diagnose(schema)).code == "AUTH_SERVICE_DOWN"


def test_f10_no_listener_rules_is_route_not_api_down() -> None:
    e = s_route_not_configured()
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", 404, "Not Found"))
    assert primary(diagnose(e)).code == "ROUTE_NOT_CONFIGURED"


# -- precedence ------------------------------------------------------------------------------------
def test_precedence_network_before_everything() -> None:
    e = s_auth_bypass()
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", None, error="refused"))
    for name in list(e.probes):
        if name.startswith("validate-"):
            e.add_probe(name, x("POST", VALIDATE, None, error="refused"))
    findings = diagnose(e)
    assert primary(findings).code == "HOST_UNREACHABLE"
    assert "AUTH_BYPASS" in {f.code for f in findings}
    assert all(not f.primary for f in findings[1:])


def test_precedence_deployment_before_configuration_before_artifacts() -> None:
    e = s_artifacts_disabled()
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 503, HTML_503, ctype="text/html"))
    codes = [f.code for f in diagnose(e)]
    assert codes[0] == "AUTH_SERVICE_DOWN" and "ARTIFACTS_DISABLED" in codes
    e = s_artifacts_disabled()
    e.add_exchanges([x("POST", REST + "/runs/create", 402, {"detail": "Insufficient balance"}, auth=BEARER)])
    assert [f.code for f in diagnose(e)] == ["PAYMENT_REQUIRED", "ARTIFACTS_DISABLED"]


def test_unexpected_response_only_when_nothing_else_explains() -> None:
    e = s_unexpected()
    found = primary(diagnose(e))
    assert found.code == "UNEXPECTED_RESPONSE" and "500" in found.summary
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", 503, HTML_503, ctype="text/html"))
    assert [f.code for f in diagnose(e)] == ["API_SERVICE_DOWN"]
    checks_only = healthy()
    checks_only.add_failed_check("checks/test_registration.py::test_register", "assert 'v1' == 'v2'")
    found = primary(diagnose(checks_only))
    assert found.code == "UNEXPECTED_RESPONSE" and any("test_register" in line for line in found.evidence)


# -- per-check diagnosis -----------------------------------------------------------------------------
def test_finding_for_failure_attaches_the_explaining_code() -> None:
    e = s_write_scope()
    check = [x("POST", REST + "/runs/create", 403, {"error": "FORBIDDEN", "current_scopes": ["read"]},
               auth=BEARER, label="check")]
    found = finding_for_failure(e, check)
    assert found is not None and found.code == "KEY_LACKS_WRITE_SCOPE"
    assert e.exchanges == [], "the caller's evidence is not modified"
    # a failing check on a healthy target with an odd answer: UNEXPECTED_RESPONSE naming it
    odd = [x("GET", REST + "/runs/get?run_id=1", 500, {"detail": "boom"}, auth=BEARER)]
    found = finding_for_failure(healthy(), odd)
    assert found is not None and found.code == "UNEXPECTED_RESPONSE" and "500" in found.summary
    # an assertion failure with only 2xx exchanges on a healthy target: nothing to attach
    assert finding_for_failure(healthy(), [x("GET", SEARCH, 200, {}, auth=BEARER)]) is None
    # a check failing because of the run's root cause gets the root cause
    found = finding_for_failure(s_api_down(), [])
    assert found is not None and found.code == "API_SERVICE_DOWN"


def test_evidence_from_settings_key_states() -> None:
    settings = HokusaiSettings(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, direct_mlflow_url=DIRECT)
    assert TriageEvidence.from_settings(settings, HokusaiKeys()).key_state == ev.KEY_MISSING
    bad = TriageEvidence.from_settings(settings, HokusaiKeys(primary=Secret("hk_live_short", source="env X")))
    assert bad.key_state == ev.KEY_MALFORMED and bad.key_problem and "characters" in bad.key_problem
    good = TriageEvidence.from_settings(settings, HokusaiKeys(primary=KEY, revoked=REVOKED))
    assert good.key_state == ev.KEY_PRESENT and good.key_masked == KEY.masked
    assert RAW_KEY not in json.dumps(good.to_dict())


# -- the probes, over real loopback HTTP ------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: nothing listens there


def settings_for(api: str, auth: str, *, service_id: str = "platform", timeout: float = 10.0) -> HokusaiSettings:
    return HokusaiSettings(target="remote", api_url=api, auth_url=auth, tracking_uri=api + "/api/mlflow",
                           direct_mlflow_url=api + "/mlflow", service_id=service_id, timeout=timeout)


def factory(recorder: Recorder) -> Callable[..., HokusaiSession]:
    def make(**kwargs: Any) -> HokusaiSession:
        return HokusaiSession(recorder=recorder, **kwargs)
    return make


def test_triage_against_a_closed_port_is_host_unreachable_within_budget() -> None:
    recorder = Recorder()
    api = f"http://127.0.0.1:{closed_port()}"
    auth = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    evidence = run_triage(settings_for(api, auth), HokusaiKeys(primary=KEY), factory(recorder), budget_s=5.0)
    assert time.monotonic() - started < 5.0
    health = evidence.probe(ev.API_HEALTH)
    assert health is not None and health.error == "refused"
    assert ev.PROXY_KEY in evidence.skipped and ev.EXPERIMENT_CREATE in evidence.skipped
    assert len(recorder) == len(evidence.probes) <= 3, "an unreachable host is not asked again"
    found = primary(diagnose(evidence))
    assert found.code == "HOST_UNREACHABLE" and "refused" in found.summary
    assert api.split("//")[1] in found.summary and "api-url" in found.summary


def test_triage_of_hosts_that_accept_but_never_answer_stays_in_budget() -> None:
    listeners = [socket.socket() for _ in range(2)]
    try:
        for sock in listeners:
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        api, auth = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in listeners)
        started = time.monotonic()
        evidence = run_triage(settings_for(api, auth, timeout=0.5), HokusaiKeys(primary=KEY), factory(Recorder()),
                              budget_s=4.0)
        assert time.monotonic() - started < 4.0
    finally:
        for sock in listeners:
            sock.close()
    assert evidence.probes[ev.API_HEALTH].error == "timeout" and evidence.probes[ev.AUTH_HEALTH].error == "timeout"
    assert set(evidence.probes) == {ev.API_HEALTH, ev.AUTH_HEALTH}
    found = primary(diagnose(evidence))
    assert found.code == "HOST_UNREACHABLE" and "timed out" in found.summary


@pytest.mark.parametrize("keys, code", [
    (HokusaiKeys(), "KEY_MISSING"),
    (HokusaiKeys(primary=Secret("not-a-hokusai-key-at-all", source="env HOKUSAI_API_KEY")), "KEY_MALFORMED"),
])
def test_triage_without_a_usable_key_sends_nothing(keys: HokusaiKeys, code: str) -> None:
    recorder = Recorder()
    made: list[HokusaiSession] = []

    def make(**kwargs: Any) -> HokusaiSession:
        made.append(HokusaiSession(recorder=recorder, **kwargs))
        return made[-1]

    evidence = run_triage(settings_for("http://127.0.0.1:9", "http://127.0.0.1:9"), keys, make)
    assert len(recorder) == 0 and evidence.probes == {} and made == []
    findings = diagnose(evidence)
    assert [f.code for f in findings] == [code] and findings[0].primary
    assert "not-a-hokusai-key-at-all" not in findings[0].summary


class FakePlatform(BaseHTTPRequestHandler):
    """A tiny healthy platform (API + proxy + auth on one handler), with a service_id switch."""

    proxy_service_id = "platform"
    key = RAW_KEY
    delay_s = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = (json.dumps(body) if ctype == "application/json" else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def _validate(self, key: str | None, service_id: str | None) -> tuple[int, Any]:
        if key != self.key:
            return 401, {"detail": "API key not found or invalid"}
        if service_id is not None and service_id != "platform":
            return 401, {"detail": f"API key is registered for service 'platform', not '{service_id}'"}
        return 200, valid()

    def _route(self, method: str) -> None:
        time.sleep(self.delay_s)
        path = self.path.split("?")[0]
        body = self._body() if method in ("POST", "PUT", "DELETE") else {}
        if path in ("/health", "/mlflow/health", "/api/health/mlflow"):
            return self._send(200, {"status": "ok"})
        if path == "/api/v1/keys/validate":
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
            key = body.get("api_key") or bearer
            return self._send(*self._validate(key, body.get("service_id")))
        if path.startswith("/api/mlflow/"):
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
            if bearer is None:
                return self._send(401, {"detail": "API key required"})
            status, _ = self._validate(bearer, self.proxy_service_id)
            if status != 200:
                return self._send(401, {"detail": "Invalid or expired API key"})
            if path.endswith("/experiments/create"):
                return self._send(200, {"experiment_id": "5"})
            if "/mlflow-artifacts/" in path and method == "GET":
                return self._send(200, "hokusai triage probe\n", "application/octet-stream")
            return self._send(200, {})
        return self._send(404, "Not Found", "text/plain")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


@pytest.fixture
def platform() -> Iterator[tuple[str, str, type[FakePlatform]]]:
    handler = type("Handler", (FakePlatform,), {})
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        api, auth = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        yield api, auth, handler
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)


def test_triage_of_a_healthy_target_is_quiet_complete_and_fast(platform: tuple[str, str, Any]) -> None:
    api, auth, _ = platform
    recorder = Recorder()
    evidence = run_triage(settings_for(api, auth), HokusaiKeys(primary=KEY), factory(recorder), budget_s=10.0)
    assert evidence.elapsed_s < 10.0
    for name in (ev.API_HEALTH, ev.AUTH_HEALTH, ev.MLFLOW_HEALTH, ev.PROXY_NO_KEY, ev.PROXY_KEY,
                 ev.PROXY_UNKNOWN_KEY, "validate-header", "validate-body", "validate-header:platform",
                 "validate-body:platform", ev.API_HEALTH_MLFLOW, ev.EXPERIMENT_CREATE, ev.EXPERIMENT_DELETE,
                 ev.ARTIFACT_PUT, ev.ARTIFACT_GET, ev.MODEL_CREATE, ev.MODEL_DELETE):
        assert name in evidence.probes, (name, evidence.skipped)
    assert evidence.probes[ev.PROXY_NO_KEY].status == 401 and evidence.probes[ev.PROXY_KEY].status == 200
    assert all((e.label or "").startswith("probe:") for e in recorder.all())
    assert diagnose(evidence) == []
    dumped = json.dumps(evidence.to_dict())
    assert RAW_KEY not in dumped and RAW_KEY[8:] not in dumped


def test_triage_stops_when_the_budget_is_spent(platform: tuple[str, str, Any]) -> None:
    api, auth, handler = platform
    handler.delay_s = 0.3
    evidence = run_triage(settings_for(api, auth), HokusaiKeys(primary=KEY), factory(Recorder()), budget_s=1.2)
    assert evidence.elapsed_s < 2.0
    assert 2 <= len(evidence.probes) <= 5
    assert "the triage time budget was spent" in evidence.skipped.values()


def test_triage_of_a_proxy_with_the_wrong_service_id(platform: tuple[str, str, Any]) -> None:
    api, auth, handler = platform
    handler.proxy_service_id = "ml-platform"
    evidence = run_triage(settings_for(api, auth), HokusaiKeys(primary=KEY), factory(Recorder()))
    assert ev.EXPERIMENT_CREATE in evidence.skipped
    found = primary(diagnose(evidence))
    assert found.code == "SERVICE_ID_REJECTED" and "'platform'" in found.summary
    assert_no_raw_key([found])


# -- performance only: LATENCY_BUDGET_EXCEEDED --------------------------------------------------------
def test_perf_only_fact_is_latency_budget_exceeded_primary_naming_the_numbers() -> None:
    e = s_latency()
    e.add_failed_check(AUTH_PERF, "auth validation p95 2105 ms over the 1000 ms budget")
    findings = diagnose(e)
    assert [f.code for f in findings] == ["LATENCY_BUDGET_EXCEEDED"], "not UNEXPECTED_RESPONSE"
    found = primary(findings)
    assert found.category == "other"
    for part in ("auth_validate_ms", "p50 2012 ms", "p95 2105 ms", "1000 ms budget"):
        assert part in found.summary, found.summary
    assert any(AUTH_PERF in line for line in found.evidence)
    assert "auth service" in found.remediation and "Redis" in found.remediation
    assert "about 2 s, the step of a Redis timeout" in found.remediation, "F23: ~2 s steps"
    assert AUTH in found.remediation, "the remediation names the host"


def test_baseline_regression_and_each_measure_say_where_the_time_goes() -> None:
    e = healthy()
    e.add_latency_miss(ev.latency_miss("proxy_request_ms", p50=130.0, p95=150.0, n=30, baseline_p50=40.0,
                                       factor=2.0, nodeid=PROXY_PERF))
    e.add_latency_miss(ev.latency_miss("registration_s", p50=45.2, p95=45.2, n=1, budget=30.0,
                                       phases={"register": 2.0, "log_model": 40.1}))
    found = primary(diagnose(e))
    assert found.code == "LATENCY_BUDGET_EXCEEDED" and found.summary.startswith("2 performance targets")
    assert "proxy_request_ms p50 130 ms, p95 150 ms" in found.summary.replace("(", "").replace(")", "")
    assert "3.2x the baseline's 40 ms, allowed 2x" in found.summary
    assert "registration_s" in found.summary and "log_model 40.1 s" in found.summary
    assert "API service" in found.remediation and "MLflow upstream" in found.remediation
    assert "MLflow server" in found.remediation and "artifact store" in found.remediation
    assert "Redis timeout (F23)" not in found.remediation, "no 2 s step here"


def test_functional_failure_stays_primary_and_latency_is_not() -> None:
    for scenario, code in ((s_write_scope, "KEY_LACKS_WRITE_SCOPE"), (s_api_down, "API_SERVICE_DOWN"),
                           (s_revocation_delayed, "REVOCATION_DELAYED"), (s_unexpected, "UNEXPECTED_RESPONSE")):
        e = scenario()
        e.add_latency_miss(ev.latency_miss("auth_validate_ms", p50=5.0, p95=9.0, n=20, budget=1.0, nodeid=AUTH_PERF))
        findings = diagnose(e)
        assert primary(findings).code == code
        assert findings[-1].code == "LATENCY_BUDGET_EXCEEDED" and not findings[-1].primary


def test_unexplained_functional_check_outranks_latency() -> None:
    e = s_latency()
    e.add_failed_check(AUTH_PERF, "over budget")
    e.add_failed_check("checks/test_registration.py::test_register", "assert 'v1' == 'v2'")
    assert [f.code for f in diagnose(e)] == ["UNEXPECTED_RESPONSE", "LATENCY_BUDGET_EXCEEDED"]
    assert not any(AUTH_PERF in line for line in diagnose(e)[0].evidence), "the perf check is explained"


def test_healthy_gives_nothing_and_malformed_latency_facts_are_ignored() -> None:
    assert diagnose(healthy()) == []
    e = healthy()
    e.add_fact(ev.FACT_LATENCY_MISSES, [{"measure": "auth_validate_ms"}, "slow", {"p50": 1, "p95": 2}])
    assert diagnose(e) == []
    e.add_fact(ev.FACT_LATENCY_MISSES, "not a list")
    assert diagnose(e) == []


def test_failing_perf_check_gets_its_own_latency_code_even_beside_a_functional_root_cause() -> None:
    e = s_write_scope()
    e.add_latency_miss(ev.latency_miss("auth_validate_ms", p50=5.0, p95=9.0, n=20, budget=1.0, nodeid=AUTH_PERF))
    e.add_latency_miss(ev.latency_miss("proxy_request_ms", p50=500.0, p95=900.0, n=30, budget=100.0,
                                       nodeid=PROXY_PERF))
    sample = [x("POST", VALIDATE, 200, valid(), auth=BEARER, label="check:perf-validate")]
    sample[0].nodeid = AUTH_PERF
    found = finding_for_failure(e, sample)
    assert found is not None and found.code == "LATENCY_BUDGET_EXCEEDED" and not found.primary
    assert "auth_validate_ms" in found.summary and "proxy_request_ms" not in found.summary, "only its own measure"
    # a functional check in the same run still gets the run's root cause
    other = finding_for_failure(e, [x("GET", SEARCH, 200, {}, auth=BEARER)])
    assert other is not None and other.code == "KEY_LACKS_WRITE_SCOPE"
    # perf only, a check without recorded exchanges: the run's root cause, i.e. the latency finding
    found = finding_for_failure(s_latency(), [])
    assert found is not None and found.code == "LATENCY_BUDGET_EXCEEDED"


def test_latency_miss_facts_accumulate_and_stay_json_ready() -> None:
    e = healthy()
    e.add_latency_miss(ev.latency_miss("auth_validate_ms", p50=1, p95=2, n=3, budget=1))
    e.add_latency_miss(ev.latency_miss("proxy_request_ms", p50=1, p95=2, n=3, budget=1))
    assert [m["measure"] for m in e.latency_misses()] == ["auth_validate_ms", "proxy_request_ms"]
    assert json.loads(json.dumps(e.to_dict()))["facts"][ev.FACT_LATENCY_MISSES][1]["unit"] == "ms"


# -- SUITE_ERROR: a check that crashed is not a deployment finding ------------------------------------
def test_suite_errors_rank_below_a_deployment_finding() -> None:
    e = s_wrong_service_id()
    e.add_fact(FACT_SUITE_ERRORS, ["x.py::test_y (in a fixture): PytestWarning: boom"])
    findings = diagnose(e)
    assert primary(findings).code == "SERVICE_ID_REJECTED"
    assert [f.code for f in findings if f.code == "SUITE_ERROR"] == ["SUITE_ERROR"]


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        if cause is None:
            raise exc
        raise exc from cause
    except BaseException as caught:  # noqa: BLE001 - the test wants the raised object
        return caught


@pytest.mark.parametrize(("exc", "answer"), [
    pytest.param(AssertionError("proxy said 401"), True, id="assertion"),
    pytest.param(pytest.fail.Exception("REVOCATION_DELAYED: ...", pytrace=False), True, id="pytest.fail"),
    pytest.param(ConnectionRefusedError(111, "refused"), True, id="refused"),
    pytest.param(TimeoutError("timed out"), True, id="timeout"),
    pytest.param(pytest.PytestWarning("record_property is incompatible"), False, id="warning-as-error"),
    pytest.param(UserWarning("Any type hint is inferred as AnyType"), False, id="library-warning"),
    pytest.param(TypeError("unexpected keyword"), False, id="suite-bug"),
    pytest.param(ImportError("no module named mlflow"), False, id="missing-import"),
])
def test_deployment_answers_and_suite_errors_are_told_apart(exc: BaseException, answer: bool) -> None:
    assert is_deployment_answer(_raised(exc)) is answer


def test_the_cause_chain_decides_for_a_wrapped_error() -> None:
    import requests

    from pytest_hokusai.errors import HokusaiError

    wrapped_http = _raised(HokusaiError("log_model failed"), requests.ConnectionError("refused"))
    wrapped_warning = _raised(HokusaiError("log_model failed"), UserWarning("Any type hint is inferred"))
    assert is_deployment_answer(wrapped_http) is True
    assert is_deployment_answer(wrapped_warning) is False
    finding = suite_error_for_check("checks/test_registration.py::test_x", "call", wrapped_warning)
    assert finding is not None and finding.code == "SUITE_ERROR" and finding.category == "other"
    assert "UserWarning: Any type hint is inferred" in finding.summary
    assert "host project's warning filters" in finding.summary
    assert finding.evidence == [("checks/test_registration.py::test_x (in the check): UserWarning: Any type hint "
                                "is inferred")]
    assert suite_error_for_check("n", "call", wrapped_http) is None


# -- sentences that read as sentences, content types named right --------------------------------------
def test_host_unreachable_reads_as_a_sentence() -> None:
    e = TriageEvidence(api_url=API, auth_url=AUTH, tracking_uri=TRACKING, direct_mlflow_url=DIRECT,
                       key_masked=KEY.masked)
    e.add_probe(ev.API_HEALTH, x("GET", API + "/health", 200, {"status": "healthy"}))
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", None, error="refused"))
    found = primary(diagnose(e))
    host = AUTH.split("://", 1)[1]
    assert found.code == "HOST_UNREACHABLE"
    assert found.summary == f"Nothing answers at {host} (auth-url): connection refused before any HTTP status."


@pytest.mark.parametrize(("body", "ctype", "words"), [
    ("Not Found", "text/plain", "a plain-text 404"),
    ("<html><body><h1>404 Not Found</h1></body></html>", "text/html", "an HTML 404"),
])
def test_route_not_configured_names_the_content_type(body: str, ctype: str, words: str) -> None:
    e = healthy()
    e.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 404, body, ctype=ctype))
    found = primary(diagnose(e))
    assert found.code == "ROUTE_NOT_CONFIGURED", found
    assert words in found.summary
    assert ("plain-text" in found.summary) is (ctype == "text/plain")
