"""The SDK checks end to end (issue 11): the real SDK registers through the stack and the stack records
its events; the token-clearing SDK of 2025-07-16 … 2026-04-18 (a stand-in, contract F15) is diagnosed
as CLIENT_TOKEN_LOST; the two event faults name the SDK step and the platform's answer."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from pytest_hokusai import sdk as hs
from pytest_hokusai.stack.faults import FAULTS

from .conftest import LiveRun, leftover_names, registered_models, short_id
from .test_faults import SDK_EVENT_FAULTS, assert_diagnosed

STANDIN = Path(__file__).resolve().parent / "sdk_standin"
GIT_INSTALL = ('"hokusai-ml-platform[ml] @ git+https://github.com/Hokusai-protocol/hokusai-data-pipeline.git'
               '#subdirectory=hokusai-ml-platform"')
FALLBACK_CHECK = "test_sdk.py::test_sdk_fallback_keeps_token_and_tracking_uri"
#: Only the library registration (about 10 s); the CLI meets the same route.
EVENT_SELECTION = ("-m", "live and hokusai_sdk", "-k", "tokenized")


def sdk_installed() -> bool:
    """Whether the SDK is installed, read from its metadata: importing it here would import mlflow into
    the test process, which pytester's module snapshot then tears down between tests."""
    try:
        metadata.version("hokusai-ml-platform")
    except metadata.PackageNotFoundError:
        return False
    return True


def require_sdk() -> None:
    if not sdk_installed():
        pytest.skip(hs.SDK_MISSING_MESSAGE)


def test_token_clearing_sdk_is_client_token_lost(run_live):
    run = run_live("-m", "live and hokusai_sdk", "-k", "fallback", env={"PYTHONPATH": str(STANDIN)})

    assert run.failed == {FALLBACK_CHECK}, run.explain()
    assert run.report["verdict"] == "fail"
    primary = run.primary
    assert primary["code"] == "CLIENT_TOKEN_LOST", run.explain()
    evidence = "\n".join(primary["evidence"])
    assert "[none] -> 401" in evidence and "API key required" in evidence, evidence  # arrived without Authorization
    assert "moved to http://localhost:5001" in evidence, evidence  # the URI the client moved to
    assert "MLFLOW_TRACKING_TOKEN was unset" in evidence, evidence
    check = next(c for c in run.report["checks"] if short_id(c["nodeid"]) == FALLBACK_CHECK)
    assert check["diagnosis"] == "CLIENT_TOKEN_LOST"
    assert "CLIENT_TOKEN_LOST" in run.output and "removed" in run.output, run.output


def test_every_sdk_fault_is_tested_here():
    assert {f for f in FAULTS if FAULTS[f].code.startswith("SDK_")} == SDK_EVENT_FAULTS


def test_without_the_sdk_every_sdk_check_skips_with_the_git_install_line(run_live, tmp_path):
    # `import hokusai` fails in the run, whatever is installed: the state of a machine without the SDK.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['hokusai'] = None\n")
    run = run_live("-m", "live and hokusai_sdk", "-rs", env={"PYTHONPATH": str(tmp_path)})

    assert run.outcomes("skipped") == {short_id(c["nodeid"]) for c in run.report["checks"]}, run.explain()
    assert len(run.report["checks"]) == 4, run.explain()
    reasons = [line for line in run.result.outlines if line.startswith("SKIPPED [4]")]
    assert len(reasons) == 1, run.output  # one reason for all four
    assert "not on PyPI (PyPI's 'hokusai' is an unrelated package)" in reasons[0] and GIT_INSTALL in reasons[0]
    # every selected check skipped: the verdict is FAIL, and the terminal does not call that a pass
    assert run.report["verdict"] == "fail" and not run.report["diagnoses"], run.explain()
    assert "every selected live check skipped (4 live checks)" in run.output, run.output
    assert "every selected live check passed" not in run.output


def _event_run(run_live, fault: str) -> LiveRun:
    require_sdk()
    return run_live(*EVENT_SELECTION, faults=[fault])


@pytest.mark.parametrize(("fault", "answer"), [
    ("events-route-missing", "404"),
    ("events-hook-fails", "Failed to emit model registration event"),
])
def test_event_faults_name_the_sdk_step_and_the_answer(run_live, fault, answer):
    """The SDK's faults of test_faults.py's every-fault rule: verdict fail, the fault's code primary."""
    code = FAULTS[fault].code
    run = _event_run(run_live, fault)

    assert_diagnosed(run, code)

    assert run.failed == {"test_sdk.py::test_sdk_registers_tokenized_model"}, run.explain()
    assert run.primary["code"] == code, run.explain()
    assert "registration event POST /api/models/tokenized-registration-events" in run.primary["summary"]
    assert answer in run.primary["summary"], run.primary
    assert "then the SDK's registration event failed" in run.output, run.output


def test_sdk_leftovers_are_listed_like_every_other_checks(run_live, clean_registry, pytester):
    """What the SDK check cannot delete (the real proxy drops DELETE bodies) is a leftover in the
    terminal, the JSON report and the Markdown, under its canary name, never a failure of the check."""
    require_sdk()
    markdown = pytester.path / "results.md"
    run = run_live(*EVENT_SELECTION, "--hokusai-report-md", str(markdown), faults=["drop-delete-body"])

    assert run.outcomes("passed") == {"test_sdk.py::test_sdk_registers_tokenized_model"}, run.explain()
    assert leftover_names(run) == {hs.CANARY_MODEL}, run.report["leftovers"]
    left = next(x for x in run.report["leftovers"] if x["name"] == hs.CANARY_MODEL)
    assert "Missing value for required parameter" in left["why"] and "delete_registered_model" in left["remove"]
    assert set(registered_models(clean_registry)) == {hs.CANARY_MODEL}, "the report lists what stayed behind"
    assert "leftovers:" in run.output and hs.CANARY_MODEL in run.output, run.output
    text = markdown.read_text(encoding="utf-8")
    assert "## Leftovers" in text and hs.CANARY_MODEL in text
