"""--hokusai-accept, leftovers and canary names (issue 9): settings, verdict, reports, triage leftovers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pytest_hokusai.canary import (
    CANARY_MODELS,
    canary_name,
    concurrency_canaries,
    is_canary,
    triage_leftovers,
)
from pytest_hokusai.diagnosis import evidence as ev
from pytest_hokusai.diagnosis.probes import TRIAGE_MODEL
from pytest_hokusai.errors import SettingsError
from pytest_hokusai.known_issues import ACCEPTED_NOTE, accept_as_xfail, leftover_lines, mark_accepted
from pytest_hokusai.report.html import summary_html
from pytest_hokusai.report.json_report import build_json_report
from pytest_hokusai.report.markdown import render_markdown
from pytest_hokusai.settings import HokusaiSettings, resolve_settings
from pytest_hokusai.state import CheckResult, Finding, Leftover, RunState

from .test_diagnosis_rules import BEARER, MISSING_NAME, REST, healthy, x

DROPS = "PROXY_DROPS_REQUEST_BODY"


# -- the setting ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cli", "env", "ini", "expected"), [
    (None, None, None, ()),
    ("PROXY_DROPS_REQUEST_BODY", None, None, (DROPS,)),
    (None, "proxy_drops_request_body, not_hokusai_api", None, (DROPS, "NOT_HOKUSAI_API")),
    (None, None, "RATE_LIMITED,RATE_LIMITED", ("RATE_LIMITED",)),
])
def test_accept_is_resolved_from_cli_env_ini(cli, env, ini, expected) -> None:
    settings = resolve_settings({"hokusai_accept": cli}, {"HOKUSAI_ACCEPT": env} if env else {},
                                {"hokusai_accept": ini} if ini else {})
    assert settings.accept == expected


def test_an_unknown_accepted_code_is_an_error_naming_the_source_and_the_valid_codes() -> None:
    with pytest.raises(SettingsError) as caught:
        resolve_settings({}, {"HOKUSAI_ACCEPT": "PROXY_DROPS_REQUEST_BODY,DROPPED_BODY"}, {})
    message = str(caught.value)
    assert "unknown diagnosis code(s) DROPPED_BODY" in message and "env HOKUSAI_ACCEPT" in message
    assert "valid codes:" in message and DROPS in message and "NOT_HOKUSAI_API" in message


# -- verdict --------------------------------------------------------------------------------------
def _state(*, accepted: bool) -> RunState:
    state = RunState()
    state.record_check(CheckResult("checks/test_registration.py::test_register", "passed", markers=["live"]))
    state.record_check(CheckResult("checks/test_proxy.py::test_mlflow_client_deletes_through_proxy",
                                   "xfailed" if accepted else "failed", markers=["live", "proxy"], diagnosis=DROPS))
    state.findings = [Finding(DROPS, "deployment", "The proxy drops DELETE bodies.", ["DELETE ... -> 400"],
                              "Forward DELETE bodies.", primary=True)]
    mark_accepted(state.findings, (DROPS,) if accepted else ())
    return state


def test_verdict_passes_when_only_accepted_findings_remain() -> None:
    assert _state(accepted=True).verdict == "pass"
    assert _state(accepted=False).verdict == "fail"
    state = _state(accepted=True)
    state.findings.append(Finding("ARTIFACTS_DISABLED", "configuration", "independent", [], "fix"))
    assert state.verdict == "fail", "an unaccepted finding keeps the gate closed"


def test_accept_as_xfail_carries_the_code_without_any_marker() -> None:
    report = pytest.TestReport("n", ("f", 1, "n"), {}, "failed", "boom", "call")
    finding = Finding(DROPS, "deployment", "The proxy drops DELETE bodies.")
    accept_as_xfail(report, finding)
    assert report.outcome == "skipped" and report.wasxfail.startswith(f"{DROPS}: {ACCEPTED_NOTE}")


# -- leftovers --------------------------------------------------------------------------------------
def test_leftovers_are_kept_once_per_name_and_drained_for_the_controller() -> None:
    state = RunState()
    state.add_leftover(Leftover("registered_model", "hokusai-canary-proxy", "delete version 3: 400"))
    state.add_leftover(Leftover("registered_model", "hokusai-canary-proxy", "delete the registered model: 400"))
    assert len(state.leftovers) == 1 and "delete version 3" in state.leftovers[0].why
    assert "delete the registered model" in state.leftovers[0].why
    assert [left.name for left in state.drain_unsent_leftovers()] == ["hokusai-canary-proxy"]
    assert state.drain_unsent_leftovers() == []


def test_reports_list_leftovers_with_how_to_remove_and_mark_accepted_findings() -> None:
    state = _state(accepted=True)
    state.add_leftover(Leftover("registered_model", "hokusai-canary-proxy", "DELETE -> 400 Missing value",
                                "MlflowClient().delete_registered_model('hokusai-canary-proxy')"))
    settings = HokusaiSettings(target="local", api_url="http://127.0.0.1:8001", auth_url="http://127.0.0.1:8002")
    report = build_json_report(state, settings)
    assert report["verdict"] == "pass"
    assert report["diagnoses"][0]["accepted"] is True and report["diagnoses"][0]["primary"] is True
    assert report["leftovers"] == [{"kind": "registered_model", "name": "hokusai-canary-proxy",
                                    "why": "DELETE -> 400 Missing value",
                                    "remove": "MlflowClient().delete_registered_model('hokusai-canary-proxy')"}]
    text = render_markdown(report, generated_at=datetime(2026, 11, 30, tzinfo=timezone.utc))
    assert "## Leftovers" in text and "hokusai-canary-proxy" in text and "delete_registered_model" in text
    assert f"`{DROPS}` (deployment) \u2014 accepted known issue" in text
    html = summary_html(report)
    assert 'id="hokusai-leftovers"' in html and "hokusai-canary-proxy" in html and "accepted known issue" in html
    assert leftover_lines(state.leftovers)[1].strip().startswith("remove: MlflowClient()")


def test_a_healthy_report_has_an_empty_leftovers_list() -> None:
    report = build_json_report(RunState(), HokusaiSettings())
    assert report["leftovers"] == [] and "leftovers" not in render_markdown(report, generated_at=datetime.now())


def test_triage_leftovers_come_from_failed_deletes_of_what_it_created() -> None:
    e = healthy()
    assert triage_leftovers(e) == []
    e.add_probe(ev.MODEL_DELETE, x("DELETE", REST + "/registered-models/delete", 400, MISSING_NAME, auth=BEARER))
    (left,) = triage_leftovers(e)
    assert (left.kind, left.name) == ("registered_model", TRIAGE_MODEL)
    assert "Missing value for required parameter 'name'" in left.why and left.remove
    gone = healthy()  # another worker's triage deleted the shared canary first: nothing is left
    gone.add_probe(ev.MODEL_DELETE, x("DELETE", REST + "/registered-models/delete", 404,
                                      {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"}, auth=BEARER))
    assert triage_leftovers(gone) == []


def test_canary_names_are_a_small_fixed_recognisable_set() -> None:
    assert TRIAGE_MODEL == canary_name("triage")
    assert len(CANARY_MODELS) <= 8 and all(is_canary(name) for name in CANARY_MODELS.values())
    assert concurrency_canaries(2) == ["hokusai-canary-concurrency-m0", "hokusai-canary-concurrency-m1"]
    assert all(is_canary(name) for name in concurrency_canaries(8))
    assert not is_canary("hokusai-check-model-main-123")
    with pytest.raises(ValueError, match="known: registration"):
        canary_name("nope")


def test_terminal_groups_leftovers_that_stayed_for_one_reason() -> None:
    from pytest_hokusai.canary import model_leftover

    uri = "http://127.0.0.1:8001/api/mlflow"
    missing = "INVALID_PARAMETER_VALUE: Missing value for required parameter 'name'."
    state = RunState()
    state.add_leftover(model_leftover("hokusai-canary-proxy", f"delete version 1: {missing}", uri))
    state.add_leftover(model_leftover("hokusai-canary-concurrency", f"delete versions 1, 2, 3: {missing}", uri))
    state.add_leftover(model_leftover("hokusai-canary-triage", "DELETE /api/mlflow/... -> 400 Missing value", uri))
    state.add_leftover(Leftover("artifact", "hokusai-triage/x.txt", "DELETE -> 404", "delete it from the store"))
    lines = leftover_lines(state.leftovers)

    assert lines[0] == "3 registered_models: hokusai-canary-proxy, hokusai-canary-concurrency, hokusai-canary-triage"
    assert lines[1] == "    why (hokusai-canary-triage): DELETE /api/mlflow/... -> 400 Missing value"
    assert lines[2] == f"    why (the other 2): {missing}"
    assert lines[3].startswith(f"    remove, for each: MlflowClient(tracking_uri={uri!r}).delete_registered_model(<name>)")
    assert "hokusai-canary" not in lines[3]  # the names are on the first line, once
    assert lines[4:] == ["artifact hokusai-triage/x.txt: DELETE -> 404", "    remove: delete it from the store"]
    assert len(state.leftovers) == 4  # the reports keep one entry each


def test_clean_up_names_each_distinct_error_once_with_the_versions_it_hit() -> None:
    from pytest_hokusai.canary import remove_registration

    class Refusing:
        tracking_uri = "http://127.0.0.1:8001/api/mlflow"

        def delete_model_version(self, name, version):
            raise RuntimeError("INVALID_PARAMETER_VALUE: Missing value for required parameter 'name'.")

        def search_experiments(self, *args, **kwargs):
            return []

    left = remove_registration(Refusing(), model="hokusai-canary-concurrency", versions=["1", "2", "3"])
    assert [x.why for x in left] == [
        "delete versions 1, 2, 3: INVALID_PARAMETER_VALUE: Missing value for required parameter 'name'."]


def test_one_reason_for_all_reads_once() -> None:
    from pytest_hokusai.canary import model_leftover

    state = RunState()
    for name in ("hokusai-canary-a", "hokusai-canary-b"):
        state.add_leftover(model_leftover(name, "delete version 1: 403 Forbidden"))
    assert leftover_lines(state.leftovers)[1] == "    why (all 2): 403 Forbidden"
