"""Unit tests of the hand-off (issue 13): owners, issue reports, reproductions, GitHub, notification
message, the notify-url setting.

No network. The curl commands are checked by running them under bash with ``curl`` replaced by a
shell function that prints its arguments, so the quoting is proven, not eyeballed. Key-shaped
constants are built at run time.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.diagnosis.catalog import CODES, TEXTS
from pytest_hokusai.diagnosis.ownership import (
    ANNOUNCED_CODES,
    IMPACTS,
    OWNER_TEAMS,
    OWNERS,
    impact_of,
    owner_of,
)
from pytest_hokusai.errors import SettingsError
from pytest_hokusai.evidence import Exchange, request_body_shape
from pytest_hokusai.notify import build_message
from pytest_hokusai.report import build_json_report, render_markdown
from pytest_hokusai.report.github import append_step_summary, escape_data, escape_property, workflow_commands
from pytest_hokusai.report.html import summary_html
from pytest_hokusai.report.issues import ISSUE_FILE, expected_for, render_issues, write_issues
from pytest_hokusai.report.repro import UNKNOWN_KEY_VAR, answer_of, curl_for, detail_of, mlflow_for
from pytest_hokusai.secret import Secret, SecretUrl, mask_url, redact
from pytest_hokusai.settings import HokusaiSettings, resolve_settings
from pytest_hokusai.state import Finding, RunState

API = "https://registry.example.test"
AUTH = "https://auth.example.test"
TRACKING = API + "/api/mlflow"
SEARCH = TRACKING + "/api/2.0/mlflow/experiments/search?max_results=1"
VALIDATE = AUTH + "/api/v1/keys/validate"


def _key() -> Secret:
    alphabet = string.ascii_letters + string.digits
    return Secret("hk_live_" + "".join(secrets.choice(alphabet) for _ in range(32)))


@pytest.fixture
def key() -> Secret:
    return _key()


# -- owners -------------------------------------------------------------------------------------
def test_every_code_names_a_valid_owner() -> None:
    missing = [code for code in CODES if code not in OWNERS]
    assert not missing, f"codes without an owner in diagnosis/catalog.py OWNERS: {missing}"
    invalid = {code: OWNERS[code] for code in CODES if OWNERS[code] not in OWNER_TEAMS}
    assert not invalid, f"owners not in OWNER_TEAMS: {invalid}"
    unknown = set(OWNERS) - set(TEXTS) - ANNOUNCED_CODES
    assert not unknown, f"owners for unknown codes: {sorted(unknown)}"
    assert all(OWNERS[code] in OWNER_TEAMS for code in ANNOUNCED_CODES)
    assert set(OWNER_TEAMS) == {"auth-service", "api-service", "infrastructure", "mlflow", "client", "key-owner"}


@pytest.mark.parametrize(("code", "owner"), [
    ("ROUTE_NOT_CONFIGURED", "infrastructure"), ("TLS_ERROR", "infrastructure"),
    ("AUTH_SERVICE_DOWN", "auth-service"), ("SERVICE_ID_REJECTED", "api-service"),
    ("HOST_HEADER_REJECTED", "mlflow"), ("KEY_REJECTED", "key-owner"), ("CLIENT_TOKEN_LOST", "client"),
])
def test_owner_examples(code: str, owner: str) -> None:
    assert owner_of(code) == owner


def test_every_code_has_an_impact_sentence() -> None:
    assert set(CODES) <= set(IMPACTS) <= set(CODES) | ANNOUNCED_CODES
    for code in set(IMPACTS):
        sentence = impact_of(code)
        assert sentence.endswith(".") and sentence.count(". ") == 0, (code, sentence)
    assert impact_of("SOME_NEW_CODE", "network") == "Third-party clients cannot reach the platform."


def _state(*findings: Finding) -> RunState:
    state = RunState()
    state.findings = list(findings)
    return state


def _finding(code: str = "SERVICE_ID_REJECTED", *, primary: bool = True, evidence: list[str] | None = None) -> Finding:
    return Finding(code=code, category=TEXTS[code].category, summary=f"{code} seen.", evidence=evidence or [],
                   remediation=TEXTS[code].fix, primary=primary)


def test_json_and_markdown_name_the_owner() -> None:
    report = build_json_report(_state(_finding(), _finding("ARTIFACTS_DISABLED", primary=False)), HokusaiSettings())
    assert [(d["code"], d["owner"]) for d in report["diagnoses"]] == [
        ("SERVICE_ID_REJECTED", "api-service"), ("ARTIFACTS_DISABLED", "mlflow")]
    text = render_markdown(report, generated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert "**Owner:** `api-service`" in text and "**Owner:** `mlflow`" in text
    html = summary_html(report)
    assert '<b>Owner:</b> <code>api-service</code>' in html and "<i>Owner:</i> <code>mlflow</code>" in html


# -- request body shape -------------------------------------------------------------------------
def test_request_body_shape_masks_keys(key: Secret) -> None:
    shape = request_body_shape({"api_key": key.reveal(), "service_id": "platform"})
    assert shape == json.dumps({"api_key": key.masked, "service_id": "platform"}, ensure_ascii=False)
    assert request_body_shape(data=b"\x00" * 300) == "<300 bytes>"
    assert request_body_shape(data="hello") == "hello"
    assert request_body_shape() is None


# -- curl ---------------------------------------------------------------------------------------
def _curl_args(command: str, env: dict[str, str], setup: tuple[str, ...] = ()) -> list[str]:
    """Run ``command`` under bash with curl replaced by a function that prints one argument per line."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = "\n".join(["set -eu", "curl() { printf '%s\\0' \"$@\"; }", *setup, command])
    done = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          timeout=10, check=True)
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize(("style", "header"), [
    ("Bearer", ("-H", "Authorization: Bearer {raw}")),
    ("ApiKey", ("-H", "Authorization: ApiKey {raw}")),
    ("X-API-Key", ("-H", "X-API-Key: {raw}")),
])
def test_curl_sends_the_key_from_the_environment(key: Secret, style: str, header: tuple[str, str]) -> None:
    exchange = Exchange("GET", SEARCH, status=401, auth=f"{style} {key.masked}")
    repro = curl_for(exchange, {key.masked: "HOKUSAI_API_KEY"})
    assert key.reveal() not in repro.command and "$HOKUSAI_API_KEY" in repro.command and repro.exact
    args = _curl_args(repro.command, {"HOKUSAI_API_KEY": key.reveal()})
    assert args[-1] == SEARCH
    i = args.index(header[0])
    assert args[i + 1] == header[1].format(raw=key.reveal())
    assert "-X" not in args and "-L" in args


def test_curl_body_style_and_query_style(key: Secret) -> None:
    body = request_body_shape({"api_key": key.reveal(), "service_id": "platform"})
    post = Exchange("POST", VALIDATE, status=422, auth=f"body api_key={key.masked}", request_body=body)
    args = _curl_args(curl_for(post, {key.masked: "HOKUSAI_API_KEY"}).command, {"HOKUSAI_API_KEY": key.reveal()})
    assert args[args.index("-X") + 1] == "POST"
    assert json.loads(args[args.index("--data-raw") + 1]) == {"api_key": key.reveal(), "service_id": "platform"}
    assert "Content-Type: application/json" in args

    query = Exchange("GET", TRACKING + "/api/2.0/mlflow/experiments/search?api_key=***", status=401,
                     auth=f"query api_key={key.masked}")
    args = _curl_args(curl_for(query, {key.masked: "HOKUSAI_API_KEY"}).command, {"HOKUSAI_API_KEY": key.reveal()})
    assert args[-1] == TRACKING + f"/api/2.0/mlflow/experiments/search?api_key={key.reveal()}"


def test_curl_for_a_key_nobody_minted_makes_one_up(key: Secret) -> None:
    other = _key()
    repro = curl_for(Exchange("GET", SEARCH, status=401, auth=f"Bearer {other.masked}"), {key.masked: "HOKUSAI_API_KEY"})
    assert repro.setup and f"${UNKNOWN_KEY_VAR}" in repro.command
    args = _curl_args(repro.command, {}, repro.setup)
    bearer = args[args.index("-H") + 1]
    assert bearer.startswith("Authorization: Bearer hk_live_") and len(bearer) == len("Authorization: Bearer hk_live_") + 32


def test_curl_without_key_and_with_a_sized_body(key: Secret) -> None:
    args = _curl_args(curl_for(Exchange("GET", SEARCH, status=404, auth="none"), {}).command, {})
    assert "-H" not in args and args[-1] == SEARCH
    put = Exchange("PUT", TRACKING + "/api/2.0/mlflow-artifacts/artifacts/x.bin", status=503,
                   auth=f"Bearer {key.masked}", request_body="<2048 bytes>")
    repro = curl_for(put, {key.masked: "HOKUSAI_API_KEY"})
    assert "--data-binary @<(head -c 2048 /dev/zero)" in repro.command and repro.exact
    masked_header = curl_for(Exchange("GET", SEARCH, status=401, auth="Basic ***"), {})
    assert not masked_header.exact and masked_header.note


def test_answer_of_and_detail_of() -> None:
    assert answer_of('{"detail":"Invalid or expired API key"}\nHTTP 401\n') == (401, "Invalid or expired API key")
    assert answer_of("Not Found\nHTTP 404\n") == (404, "Not Found")
    assert answer_of("curl: (7) Failed to connect\nHTTP 000\n") == (None, "curl: (7) Failed to connect")
    assert detail_of('{"error_code":"RESOURCE_NOT_FOUND","message":"gone"}') == "gone"
    assert detail_of('{"detail":{"error":"ARTIFACTS_DISABLED"}}') == '{"error": "ARTIFACTS_DISABLED"}'


# -- the MLflow client snippet ------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "call"), [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1", "client.search_experiments(max_results=1)"),
    ("POST", "/api/2.0/mlflow/registered-models/create", "client.create_registered_model("),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete", "http_request(creds, '/api/2.0/mlflow/registered-models/delete', 'DELETE', json={'name': 'm'})"),
])
def test_mlflow_snippet_compiles_and_calls_the_endpoint(key: Secret, method: str, path: str, call: str) -> None:
    exchange = Exchange(method, TRACKING + path, status=400, auth=f"Bearer {key.masked}",
                        request_body='{"name": "m"}' if method == "DELETE" else None)
    snippet = mlflow_for(exchange, TRACKING, {key.masked: "HOKUSAI_API_KEY"})
    compile(snippet, "<snippet>", "exec")
    assert call in snippet and 'os.environ["HOKUSAI_API_KEY"]' in snippet and key.reveal() not in snippet


def test_mlflow_snippet_for_an_auth_service_failure_is_the_first_client_call(key: Secret) -> None:
    snippet = mlflow_for(Exchange("POST", VALIDATE, status=422, auth=f"Bearer {key.masked}"), TRACKING,
                         {key.masked: "HOKUSAI_API_KEY"})
    assert "client.search_experiments(max_results=1)" in snippet and repr(TRACKING) in snippet


# -- issue reports ------------------------------------------------------------------------------
def _report_and_exchanges(key: Secret) -> tuple[dict[str, Any], list[Exchange]]:
    ok = Exchange("POST", VALIDATE, status=200, content_type="application/json",
                  body_excerpt='{"is_valid":true,"service_id":"platform"}', auth=f"Bearer {key.masked}",
                  request_body='{"service_id": "platform"}', elapsed_ms=12)
    bad = Exchange("GET", SEARCH, status=401, content_type="application/json",
                   body_excerpt='{"detail":"Invalid or expired API key"}', auth=f"Bearer {key.masked}", elapsed_ms=4,
                   nodeid="checks/test_proxy.py::test_experiments_search_through_proxy")
    state = _state(_finding(evidence=[ok.summary(), bad.summary(), "a fact, not an exchange"]),
                   _finding("REVOCATION_DELAYED", primary=False, evidence=["the revoked key worked for 12 s"]))
    state.target = {"mode": "remote", "api_url": API, "auth_url": AUTH, "tracking_uri": TRACKING,
                    "key": key.masked, "versions": {"python": "3.11", "mlflow": "3.9.0"}}
    report = build_json_report(state, HokusaiSettings(api_url=API, auth_url=AUTH, tracking_uri=TRACKING))
    report["checks"] = [{"nodeid": "checks/test_proxy.py::test_experiments_search_through_proxy",
                         "outcome": "failed", "diagnosis": "SERVICE_ID_REJECTED"}]
    # hand-made checks: counts are derived from them (the callers add more); versions as in the target
    del report["counts"]
    report["versions"] = {"plugin": "9.9", "python": "3.11", "mlflow": "3.9.0", "sdk": None}
    return report, [ok, bad]


def test_issue_reports_are_ready_to_file(key: Secret) -> None:
    report, exchanges = _report_and_exchanges(key)
    issues = render_issues(report, exchanges, key_vars={key.masked: "HOKUSAI_API_KEY"}, plugin_version="9.9",
                           now=datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc))
    assert [(i.filename, i.owner, i.primary) for i in issues] == [
        ("01-SERVICE_ID_REJECTED.md", "api-service", True), ("02-REVOCATION_DELAYED.md", "api-service", False)]
    text = issues[0].text
    assert text.startswith("# SERVICE_ID_REJECTED on registry.example.test: ")
    assert "| Owner | `api-service`" in text and "pytest-hokusai 9.9" in text and "| mlflow | 3.9.0 |" in text
    assert IMPACTS["SERVICE_ID_REJECTED"] in text
    assert "| Same run | 02-REVOCATION_DELAYED.md |" in text
    assert "| Same run | 01-SERVICE_ID_REJECTED.md (root cause) |" in issues[1].text
    assert "First seen in this run (2026-07-01T12:00:00Z)" in text
    curl_lines = [line for line in text.splitlines() if line.startswith("curl ")]
    assert len(curl_lines) == 2 and SEARCH in curl_lines[0], "the failing request (third-party path) comes first"
    assert "# 1. the failing request; recorded answer: 401" in text
    assert "# 2. for comparison, a request that works" in text
    assert "client.search_experiments(max_results=1)" in text
    assert "| expected (contract) | actual |" in text and "401 application/json" in text
    assert "F4" in text and TEXTS["SERVICE_ID_REJECTED"].fix in text
    assert key.reveal() not in text and key.reveal()[8:] not in text
    assert "No HTTP exchange is part of this finding's evidence" in issues[1].text


def test_accepted_finding_is_written_and_marked_known(key: Secret) -> None:
    report, exchanges = _report_and_exchanges(key)
    by_option = render_issues(report, exchanges, key_vars={}, accepted=["SERVICE_ID_REJECTED"])
    report["diagnoses"][0]["accepted"] = True  # the JSON field #9 adds
    by_field = render_issues(report, exchanges, key_vars={})
    for issues in (by_option, by_field):
        assert issues[0].accepted and not issues[1].accepted
        assert issues[0].title in issues[0].text and "[known issue]" in issues[0].text.splitlines()[0]
        assert "**Known issue**" in issues[0].text


def test_since_when_with_a_baseline(key: Secret, tmp_path: Path) -> None:
    report, exchanges = _report_and_exchanges(key)
    nodeid = report["checks"][0]["nodeid"]
    passing = {"schema": "pytest-hokusai/1", "verdict": "pass", "finished_at": "2026-06-30T08:00:00Z",
               "checks": [{"nodeid": nodeid, "outcome": "passed"}], "diagnoses": []}
    text = render_issues(report, exchanges, key_vars={}, baseline=passing, baseline_path=str(tmp_path / "prev.json"),
                         now=datetime(2026, 7, 1, tzinfo=timezone.utc))[0].text
    assert ("Passing in the baseline run `prev.json` (2026-06-30T08:00:00Z, verdict pass) and failing now "
            "(2026-07-01T00:00:00Z)") in text
    assert "`test_proxy.py::test_experiments_search_through_proxy`" in text
    failing = {**passing, "verdict": "fail", "checks": [{"nodeid": nodeid, "outcome": "failed"}],
               "diagnoses": [{"code": "SERVICE_ID_REJECTED"}]}
    text = render_issues(report, exchanges, key_vars={}, baseline=failing, baseline_path="prev.json")[0].text
    assert "Not new: the baseline run `prev.json` (2026-06-30T08:00:00Z) already reported `SERVICE_ID_REJECTED`" in text


def test_write_issues_replaces_only_earlier_reports(key: Secret, tmp_path: Path) -> None:
    (tmp_path / "03-OLD_CODE.md").write_text("stale", encoding="utf-8")
    (tmp_path / "notes.md").write_text("mine", encoding="utf-8")
    report, exchanges = _report_and_exchanges(key)
    paths = write_issues(tmp_path, render_issues(report, exchanges, key_vars={}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-SERVICE_ID_REJECTED.md", "02-REVOCATION_DELAYED.md",
                                                          "notes.md"]
    assert all(ISSUE_FILE.match(p.name) for p in paths)


def test_expected_comes_from_the_contract(key: Secret) -> None:
    target = {"tracking_uri": TRACKING, "direct_mlflow_url": API + "/mlflow"}
    keys = {key.masked: "HOKUSAI_API_KEY"}
    assert "API key required" in expected_for(Exchange("GET", SEARCH, auth="none"), target, keys)
    assert expected_for(Exchange("GET", SEARCH, auth=f"Bearer {key.masked}"), target, keys).startswith("2xx")
    assert "Invalid or expired" in expected_for(Exchange("GET", SEARCH, auth="Bearer hk_live_\u2026zzzz"), target, keys)
    assert "§2.2" in expected_for(Exchange("POST", VALIDATE, auth=f"Bearer {key.masked}"), target, keys)
    assert "triage step 2" in expected_for(Exchange("GET", AUTH + "/health"), target, keys)


# -- GitHub -------------------------------------------------------------------------------------
def test_workflow_command_escaping() -> None:
    assert escape_data("50% of\r\nchecks") == "50%25 of%0D%0Achecks"
    assert escape_property("a:b,c%") == "a%3Ab%2Cc%25"


def test_one_annotation_per_finding(key: Secret) -> None:
    report, _ = _report_and_exchanges(key)
    report["diagnoses"][0]["summary"] = f"50% of the checks\nfailed with {key.reveal()}"
    lines = workflow_commands(report, accepted=["REVOCATION_DELAYED"])
    assert lines[0].startswith("::error title=SERVICE_ID_REJECTED::50%25 of the checks failed with hk_live_\u2026")
    assert "(owner: api-service)" in lines[0] and key.reveal() not in lines[0]
    assert lines[1].startswith("::warning title=REVOCATION_DELAYED::known issue, accepted: ")
    assert len(lines) == 2


def test_step_summary_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("# earlier step\n", encoding="utf-8")
    append_step_summary(path, "## ours\n")
    append_step_summary(path, "## again\n")
    assert path.read_text(encoding="utf-8") == "# earlier step\n## ours\n\n## again\n\n"


# -- notification message -----------------------------------------------------------------------
def test_notification_message(key: Secret) -> None:
    report, _ = _report_and_exchanges(key)
    report["checks"] += [{"nodeid": "a", "outcome": "passed"}, {"nodeid": "b", "outcome": "passed"}]
    message = build_message(report, accepted={"REVOCATION_DELAYED"})
    facts = message["hokusai"]
    assert facts["verdict"] == "fail" and facts["owner"] == "api-service"
    assert facts["root_cause"]["code"] == "SERVICE_ID_REJECTED" and facts["root_cause"]["remediation"]
    assert facts["counts"] == {"passed": 2, "failed": 1, "skipped": 0, "error": 0}
    assert [f["accepted"] for f in facts["findings"]] == [False, True]
    assert message["text"].startswith(":x: Hokusai live checks on https://registry.example.test: *FAIL*")
    assert "Root cause: *SERVICE_ID_REJECTED* (owner: api-service)" in message["text"]
    assert message["blocks"][0]["text"]["text"] == message["text"]
    passing = build_message({"verdict": "pass", "target": {"api_url": API}, "diagnoses": [], "checks": []})
    assert passing["hokusai"]["root_cause"] is None and "*PASS*" in passing["text"]


# -- the notify-url setting ---------------------------------------------------------------------
def _url(token: str) -> str:
    return f"https://hooks.example.test/services/T0/B0/{token}?channel=x"


def test_notify_url_is_a_secret_everywhere() -> None:
    token = secrets.token_hex(12)
    settings = resolve_settings({}, {"HOKUSAI_NOTIFY_URL": _url(token)}, {})
    assert isinstance(settings.notify_url, SecretUrl)
    assert settings.notify_url.reveal() == _url(token)
    for shown in (repr(settings), str(settings.notify_url), f"{settings.notify_url}", repr(settings.describe())):
        assert token not in shown and "/services/" not in shown, shown
    assert str(settings.notify_url) == "https://hooks.example.test/\u2026"
    assert token not in redact(f"POST {_url(token)} failed; path /services/T0/B0/{token}")
    assert settings.sources["notify_url"] == "env HOKUSAI_NOTIFY_URL"


@pytest.mark.parametrize(("value", "why"), [
    ("ftp://hooks.example.test/services/{t}", "absolute http(s) URL"),
    ("http://hooks.example.test/services/{t}", "plain http://"),
    ("hooks.example.test/services/{t}", "absolute http(s) URL"),
])
def test_bad_notify_url_is_refused_without_showing_it(value: str, why: str) -> None:
    token = secrets.token_hex(12)
    with pytest.raises(SettingsError) as info:
        resolve_settings({"hokusai_notify_url": value.format(t=token)}, {}, {})
    message = str(info.value)
    assert "notify-url" in message and "command line --hokusai-notify-url" in message and why in message
    assert token not in message and "example.test/services" not in message


def test_loopback_http_notify_url_and_report_issues_dir(tmp_path: Path) -> None:
    settings = resolve_settings({"hokusai_notify_url": "http://127.0.0.1:9/hook-abcdefgh"},
                                {}, {"hokusai_report_issues": str(tmp_path / "issues")})
    assert settings.notify_url is not None and settings.notify_url.reveal().endswith("/hook-abcdefgh")
    assert settings.report_issues == tmp_path / "issues"
    assert mask_url("http://[::1]:8080/x?y=z") == "http://[::1]:8080/\u2026"
