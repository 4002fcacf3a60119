"""The real platform's quirks (issue 9): PROXY_DROPS_REQUEST_BODY, NOT_HOKUSAI_API, AUTH_BYPASS only on
MLflow's own JSON, the untranslated artifact path, and when HOST_UNREACHABLE is (not) the root cause.

Bodies are the exact ones the real platform answers (contract sections 2.4 and 5, MLflow 3.x).
"""

from __future__ import annotations

from pytest_hokusai.diagnosis import diagnose, finding_for_failure
from pytest_hokusai.diagnosis import evidence as ev
from pytest_hokusai.diagnosis import tells as t
from pytest_hokusai.evidence import Exchange
from pytest_hokusai.http import html_title

from .test_diagnosis_rules import (
    API,
    ARTIFACT,
    AUTH,
    BEARER,
    CATCH_ALL,
    DIRECT,
    MISSING_NAME,
    OTHER,
    REST,
    SEARCH,
    VALIDATE,
    assert_no_raw_key,
    healthy,
    keyed_everywhere,
    primary,
    s_auth_bypass,
    skip_writes,
    x,
)

#: contract 2.4 (HEAD): the middleware when the auth service refuses the connection
AUTH_UNAVAILABLE = {"detail": "Authentication service unavailable"}
#: contract section 5: the proxy when MLflow refuses the connection (<base> = its MLFLOW_SERVER_URL)
MLFLOW_BASE = "http://mlflow.hokusai-development.local:5000"
MLFLOW_REFUSED = {"detail": f"Failed to connect to MLflow server at {MLFLOW_BASE}"}


def codes(e: ev.TriageEvidence) -> list[str]:
    return [f.code for f in diagnose(e)]


# -- PROXY_DROPS_REQUEST_BODY ------------------------------------------------------------------------
def client(method: str, path: str, status: int, body: object, auth: str = BEARER) -> Exchange:
    return x(method, f"{REST}/{path}", status, body, auth=auth, label="mlflow-client")


def test_dropped_delete_bodies_are_proxy_drops_request_body_naming_the_proxy_fix() -> None:
    e = healthy()
    e.add_exchanges([
        client("POST", "registered-models/create", 200, {"registered_model": {"name": "hokusai-canary-proxy"}}),
        client("POST", "registered-models/set-tag", 200, {}),
        client("DELETE", "registered-models/delete-tag", 400, MISSING_NAME),
        client("DELETE", "model-versions/delete", 400, MISSING_NAME),
    ])
    findings = diagnose(e)
    found = primary(findings)
    assert found.code == "PROXY_DROPS_REQUEST_BODY" and found.category == "deployment"
    assert "registered-models/delete-tag" in found.summary and "model-versions/delete" in found.summary
    assert "Missing value for required parameter 'name'" in found.summary
    assert "mlflow_proxy_improved.py" in found.remediation and "DELETE" in found.remediation
    assert any("DELETE" in line and "400" in line for line in found.evidence)
    assert_no_raw_key(findings)


def test_a_triage_delete_probe_alone_is_enough_and_other_400s_are_not_it() -> None:
    e = healthy()
    e.add_probe(ev.MODEL_DELETE, x("DELETE", REST + "/registered-models/delete", 400, MISSING_NAME, auth=BEARER))
    assert primary(diagnose(e)).code == "PROXY_DROPS_REQUEST_BODY"
    other = healthy()  # a real validation error with the body present, or a POST: not a dropped body
    other.add_exchanges([
        client("DELETE", "registered-models/delete", 400,
               {"error_code": "INVALID_PARAMETER_VALUE", "message": "Registered model name cannot be empty."}),
        client("POST", "runs/create", 400, MISSING_NAME),
    ])
    assert "PROXY_DROPS_REQUEST_BODY" not in codes(other)
    keyless = healthy()  # a check's deliberate request without the key is never read as a fault
    keyless.add_exchanges([client("DELETE", "registered-models/delete", 400, MISSING_NAME, auth="none")])
    assert diagnose(keyless) == []


def test_a_failing_delete_check_is_attributed_to_the_dropped_body() -> None:
    e = healthy()
    mine = [client("DELETE", "registered-models/delete-tag", 400, MISSING_NAME)]
    found = finding_for_failure(e, mine)
    assert found is not None and found.code == "PROXY_DROPS_REQUEST_BODY"


# -- precedence: HOST_UNREACHABLE only when nothing answers at that host -----------------------------
def auth_stopped() -> ev.TriageEvidence:
    """The auth service is stopped: its port refuses; the API answers 503 naming it (Retry-After: 1)."""
    e = healthy()
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", None, error="refused"))
    for name in [n for n in e.probes if n.startswith(ev.VALIDATE_PREFIX)]:
        e.probes.pop(name)
        e.skipped[name] = f"{AUTH.split('//')[1]} did not answer auth-health (refused)"
    keyed_everywhere(e, 503, AUTH_UNAVAILABLE, headers={"retry-after": "1"})
    e.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 503, AUTH_UNAVAILABLE, auth=f"Bearer {OTHER.masked}",
                                        headers={"retry-after": "1"}))
    skip_writes(e)
    return e


def test_stopped_auth_service_is_auth_service_down_with_the_refused_probe_as_evidence() -> None:
    findings = diagnose(auth_stopped())
    found = primary(findings)
    assert found.code == "AUTH_SERVICE_DOWN", [f.code for f in findings]
    assert "HOST_UNREACHABLE" not in {f.code for f in findings}
    assert "Authentication service unavailable" in found.summary and "Retry-After: 1" in found.summary
    assert "refused" in found.summary
    assert any(line.startswith("GET https://auth.example.test/health") and "refused" in line
               for line in found.evidence)
    assert any("503" in line and "Authentication service unavailable" in line for line in found.evidence)


def test_stopped_mlflow_is_mlflow_unreachable_with_the_refused_probe_as_evidence() -> None:
    direct = "http://mlflow.internal.test:5000/mlflow"  # --hokusai-direct-mlflow-url at MLflow's own port
    e = healthy()
    e.direct_mlflow_url = direct
    e.add_probe(ev.MLFLOW_HEALTH, x("GET", direct + "/health", None, error="refused"))
    keyed_everywhere(e, 502, MLFLOW_REFUSED)
    skip_writes(e)
    e.add_probe(ev.API_HEALTH_MLFLOW, x("GET", API + "/api/health/mlflow", 503, {
        "status": "error", "tracking_uri": MLFLOW_BASE, "error_type": "ConnectError",
        "error": "All connection attempts failed"}))
    findings = diagnose(e)
    found = primary(findings)
    assert found.code == "MLFLOW_UNREACHABLE", [f.code for f in findings]
    assert "HOST_UNREACHABLE" not in {f.code for f in findings}
    assert f"Failed to connect to MLflow server at {MLFLOW_BASE}" in found.summary
    assert any("refused" in line and "mlflow.internal.test" in line for line in found.evidence)


def test_wrong_auth_url_while_the_platform_works_stays_host_unreachable_naming_the_setting() -> None:
    e = healthy()  # keyed proxy requests succeed: the platform's own auth works
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", None, error="refused"))
    for name in [n for n in e.probes if n.startswith(ev.VALIDATE_PREFIX)]:
        e.probes.pop(name)
    found = primary(diagnose(e))
    assert found.code == "HOST_UNREACHABLE"
    assert "auth-url" in found.summary and "keyed requests through the proxy succeed" in found.summary
    assert "--hokusai-auth-url" in found.remediation and "platform itself works" in found.remediation


def test_nothing_answering_at_the_api_host_stays_host_unreachable() -> None:
    e = healthy()
    for name, old in list(e.probes.items()):
        if old.url.startswith(API):
            e.add_probe(name, x(old.method, old.url, None, error="refused", auth=old.auth))
    found = primary(diagnose(e))
    assert found.code == "HOST_UNREACHABLE" and "api-url" in found.summary


def test_the_auth_service_refusing_while_the_proxy_says_error_is_not_explained_by_it() -> None:
    # 'Authentication service error' means the auth service answered something: a refused auth URL
    # here is the tester's URL, and HOST_UNREACHABLE stays the root cause.
    e = auth_stopped()
    keyed_everywhere(e, 503, {"detail": "Authentication service error"})
    assert primary(diagnose(e)).code == "HOST_UNREACHABLE"


# -- AUTH_BYPASS only on MLflow's own JSON; anything else is NOT_HOKUSAI_API ----------------------------
def test_a_catch_all_website_is_not_hokusai_api_never_auth_bypass() -> None:
    from .test_diagnosis_rules import s_not_hokusai_api

    findings = diagnose(s_not_hokusai_api())
    found = primary(findings)
    assert found.code == "NOT_HOKUSAI_API" and found.category == "configuration"
    assert "AUTH_BYPASS" not in {f.code for f in findings}
    assert "200 text/html, title 'Hokusai \u2013 Own your AI'" in found.summary
    assert "--hokusai-api-url" in found.summary and "not a security finding" in found.summary
    assert "--hokusai-api-url" in found.remediation


def test_auth_bypass_needs_mlflow_json_even_cut_short() -> None:
    assert primary(diagnose(s_auth_bypass())).code == "AUTH_BYPASS"
    cut = healthy()  # the excerpt of a long experiments/search answer is cut mid-JSON
    body = '{"experiments": [{"experiment_id": "0", "name": "Default", "artifact_location": "mlflow-artifacts:/0", '
    cut.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 200, body + "\u2026", ctype="application/json"))
    assert primary(diagnose(cut)).code == "AUTH_BYPASS"


def test_login_pages_and_other_services_json_are_not_hokusai_api() -> None:
    login = healthy()
    page = "<html><head><title>Sign in \u00b7 Example SSO</title></head><body><form></form></body></html>"
    login.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 401, page, ctype="text/html"))
    found = primary(diagnose(login))
    assert found.code == "NOT_HOKUSAI_API" and "401 text/html, title 'Sign in \u00b7 Example SSO'" in found.summary
    other = healthy()
    other.add_probe(ev.PROXY_NO_KEY, x("GET", SEARCH, 200, {"status": "ok", "service": "website"}))
    other.add_probe(ev.PROXY_UNKNOWN_KEY, x("GET", SEARCH, 200, {"status": "ok", "service": "website"},
                                            auth=f"Bearer {OTHER.masked}"))
    findings = diagnose(other)
    assert primary(findings).code == "NOT_HOKUSAI_API" and "AUTH_BYPASS" not in {f.code for f in findings}
    assert "application/json" in primary(findings).summary


def test_an_auth_url_at_a_website_names_that_setting() -> None:
    e = healthy()
    e.add_probe(ev.AUTH_HEALTH, x("GET", AUTH + "/health", 200, CATCH_ALL, ctype="text/html"))
    e.add_probe(ev.validate_probe_name("header", None), x("POST", VALIDATE, 200, CATCH_ALL, ctype="text/html",
                                                           auth=BEARER))
    found = primary(diagnose(e))
    assert found.code == "NOT_HOKUSAI_API" and "--hokusai-auth-url" in found.summary
    assert "--hokusai-api-url" not in found.summary and "--hokusai-auth-url" in found.remediation


def test_the_platforms_own_errors_are_not_foreign() -> None:
    html_503 = x("GET", API + "/health", 503, "<html><title>503 Service Temporarily Unavailable</title></html>",
                 ctype="text/html")
    assert not t.foreign_answer(html_503, expect="api-health")  # API_SERVICE_DOWN's tell
    assert not t.foreign_answer(x("GET", SEARCH, 404, "Not Found"), expect="mlflow-search")  # the balancer
    assert not t.foreign_answer(x("GET", SEARCH, 401, {"detail": "API key required"}), expect="mlflow-search")
    assert not t.foreign_answer(x("GET", SEARCH, 403, "Invalid Host header - possible DNS rebinding attack "
                                  "detected"), expect="mlflow-search")
    assert not t.foreign_answer(x("GET", API + "/health", 200, {"status": "healthy"}), expect="api-health")
    assert not t.foreign_answer(x("GET", SEARCH, 200, {}), expect="mlflow-search")


def test_html_title_is_read_from_the_whole_head_not_only_the_excerpt() -> None:
    head = b"<html><head>" + b"<meta name=x content=y>" * 400 + b"<title>\n  Acme   Login </title></head>"
    assert html_title(head, "text/html; charset=utf-8") == "Acme Login"
    assert html_title(b'{"title": "<title>x</title>"}', "application/json") is None
    recorded = Exchange("GET", SEARCH, 200, "text/html", "<html>\u2026", headers={"html-title": "Acme Login"})
    assert t.html_title(recorded) == "Acme Login"
    assert t.what_answered(recorded) == "200 text/html, title 'Acme Login'"


# -- the untranslated artifact path (F11, 2025-07-22) -------------------------------------------------
def test_html_404_on_artifact_routes_only_is_the_untranslated_path_not_artifacts_disabled() -> None:
    e = healthy()
    page = ('<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested '
            "URL was not found on the server.</p>")
    e.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 404, page, ctype="text/html; charset=utf-8", auth=BEARER))
    e.probes.pop(ev.ARTIFACT_GET)
    findings = diagnose(e)
    found = primary(findings)
    assert found.code == "MLFLOW_PATH_MISMATCH" and "ARTIFACTS_DISABLED" not in {f.code for f in findings}
    assert "mlflow-artifacts" in found.summary and "ajax-api/2.0/mlflow-artifacts/" in found.remediation
    served_off = healthy()  # MLflow 3.x with artifact serving off answers 503, which is ARTIFACTS_DISABLED
    served_off.add_probe(ev.ARTIFACT_PUT, x("PUT", ARTIFACT, 503, "Endpoint: /api/2.0/mlflow-artifacts/artifacts/"
                                            "<path> disabled due to the mlflow server running with "
                                            "`--no-serve-artifacts`.", auth=BEARER))
    assert primary(diagnose(served_off)).code == "ARTIFACTS_DISABLED"


def test_direct_mlflow_probe_urls_are_untouched_by_the_new_rules() -> None:
    e = healthy()
    e.add_probe(ev.MLFLOW_ROOT, x("GET", DIRECT + "/", 200, "<html><title>MLflow</title></html>", ctype="text/html"))
    assert diagnose(e) == []  # MLflow's UI at the direct URL is HTML on purpose
