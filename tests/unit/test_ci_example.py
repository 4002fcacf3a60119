"""docs/ci/github-actions.yml, the deploy-gate example, does what the README promises.

The workflow is parsed (PyYAML, a dependency of mlflow) and checked step by step: the key reaches
pytest only through the step's environment from a secret, the reports are uploaded even when the
checks fail, and a last step fails the job unless ``hokusai.json`` says ``pass``. The gate step's
shell script is also run for real with bash and jq against a passing, a failing, a missing and a
malformed report.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_hokusai.settings import SETTINGS

WORKFLOW = Path(__file__).resolve().parents[2] / "docs" / "ci" / "github-actions.yml"
KEY_FROM_SECRET = "${{ secrets.HOKUSAI_API_KEY }}"
REPORT_FLAGS = {
    "--html": "report.html",
    "--hokusai-report-json": "hokusai.json",
    "--hokusai-report-md": "TEST_RESULTS.md",
    "--hokusai-report-issues": "hokusai-issues",
    "--junitxml": "junit.xml",
}


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    jobs = workflow["jobs"]
    assert len(jobs) == 1, "one job: the gate"
    (job,) = jobs.values()
    result: list[dict[str, Any]] = job["steps"]
    return result


def _index(steps: list[dict[str, Any]], predicate: Any, what: str) -> int:
    found = [i for i, step in enumerate(steps) if predicate(step)]
    assert len(found) == 1, f"expected exactly one {what} step, found {len(found)}"
    return found[0]


def _pytest_index(steps: list[dict[str, Any]]) -> int:
    return _index(steps, lambda s: str(s.get("run", "")).lstrip().startswith("pytest "), "pytest")


def _gate_index(steps: list[dict[str, Any]]) -> int:
    return _index(steps, lambda s: "jq -r .verdict hokusai.json" in str(s.get("run", "")), "verdict gate")


def _pytest_args(steps: list[dict[str, Any]]) -> list[str]:
    return shlex.split(steps[_pytest_index(steps)]["run"])


def test_triggers_and_basics(workflow: dict[Any, Any], steps: list[dict[str, Any]]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers, "the workflow needs triggers"
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest" and int(job["timeout-minutes"]) > 0
    assert steps[0]["uses"].startswith("actions/checkout@")
    setup = steps[_index(steps, lambda s: str(s.get("uses", "")).startswith("actions/setup-python@"), "setup")]
    assert setup["with"]["python-version"] == "3.11"  # a string: unquoted 3.10 would read as 3.1
    install = steps[_index(steps, lambda s: "pip install" in str(s.get("run", "")), "install")]
    assert "pytest-hokusai" in install["run"]


def test_runs_the_shipped_checks_with_every_report(steps: list[dict[str, Any]]) -> None:
    args = _pytest_args(steps)
    assert args[:5] == ["pytest", "--pyargs", "pytest_hokusai.checks", "-m", "live"]
    assert "--self-contained-html" in args
    given = dict(arg.split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
    assert {flag: given.get(flag) for flag in REPORT_FLAGS} == REPORT_FLAGS
    known = {spec.option for spec in SETTINGS}
    unknown = [flag for flag in given if flag.startswith("--hokusai-") and flag not in known]
    assert not unknown, f"options the plugin does not have: {unknown}"


def test_key_comes_from_secrets_through_the_environment_only(workflow: dict[str, Any],
                                                             steps: list[dict[str, Any]]) -> None:
    step = steps[_pytest_index(steps)]
    assert step["env"]["HOKUSAI_API_KEY"] == KEY_FROM_SECRET
    # only that step sees it: not the workflow, not the job, not another step
    (job,) = workflow["jobs"].values()
    for scope, env in [("workflow", workflow.get("env")), ("job", job.get("env"))] + [
            (f"step {i}", s.get("env")) for i, s in enumerate(steps) if s is not step]:
        assert "HOKUSAI_API_KEY" not in (env or {}), f"the key is exposed to the {scope}"
    # never on a command line, never a literal key anywhere
    for i, s in enumerate(steps):
        run = str(s.get("run", ""))
        for forbidden in ("secrets.", "HOKUSAI_API_KEY", "--hokusai-api-key", "hk_live_"):
            assert forbidden not in run, f"step {i} ({s.get('name')}) has {forbidden!r} in its command"
    text = WORKFLOW.read_text(encoding="utf-8")
    assert text.count("secrets.HOKUSAI_API_KEY") == 1


def test_reports_are_uploaded_even_when_checks_fail(steps: list[dict[str, Any]]) -> None:
    upload_at = _index(steps, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"), "upload")
    upload = steps[upload_at]
    assert upload_at > _pytest_index(steps)
    assert "always()" in str(upload.get("if", ""))
    paths = {line.strip() for line in upload["with"]["path"].splitlines() if line.strip()}
    assert set(REPORT_FLAGS.values()) <= paths


def test_verdict_gate_is_last_and_always_runs(steps: list[dict[str, Any]]) -> None:
    gate_at = _gate_index(steps)
    assert gate_at == len(steps) - 1, "the gate is the last step"
    assert gate_at > _pytest_index(steps)
    assert "always()" in str(steps[gate_at].get("if", ""))
    script = steps[gate_at]["run"]
    assert "${{" not in script, "the gate script must run as plain bash (it is executed by the next test)"
    assert "exit 1" in script


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("bash") is None, reason="needs bash and jq")
@pytest.mark.parametrize(("report", "passes"), [
    pytest.param('{"schema": "pytest-hokusai/1", "verdict": "pass"}', True, id="pass"),
    pytest.param('{"schema": "pytest-hokusai/1", "verdict": "fail"}', False, id="fail"),
    pytest.param(None, False, id="missing"),
    pytest.param("", False, id="empty"),
    pytest.param('{"schema": "pytest-hokusai/1"}', False, id="no-verdict"),
    pytest.param("{not json", False, id="malformed"),
])
def test_gate_script_fails_unless_verdict_is_pass(steps: list[dict[str, Any]], tmp_path: Path,
                                                  report: str | None, passes: bool) -> None:
    script = steps[_gate_index(steps)]["run"]
    if report is not None:
        (tmp_path / "hokusai.json").write_text(report, encoding="utf-8")
    # GitHub runs `run:` scripts with `bash -e {0}`
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, check=False)
    assert (done.returncode == 0) is passes, (done.returncode, done.stdout, done.stderr)
    if not passes:
        assert "::error" in done.stdout


def test_issue_reports_are_an_artifact_and_the_plugin_writes_the_job_summary(steps: list[dict[str, Any]]) -> None:
    """The issue-report folder is uploaded; no step copies the summary by hand (the plugin appends it to
    GITHUB_STEP_SUMMARY itself, so a copy would show it twice)."""
    upload = steps[_index(steps, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"), "upload")]
    assert "hokusai-issues" in upload["with"]["path"].split()
    assert not [s.get("name") for s in steps if "GITHUB_STEP_SUMMARY" in str(s.get("run", ""))]


def test_notify_url_comes_from_a_secret_through_the_environment_only(workflow: dict[str, Any],
                                                                     steps: list[dict[str, Any]]) -> None:
    step = steps[_pytest_index(steps)]
    assert step["env"]["HOKUSAI_NOTIFY_URL"] == "${{ secrets.HOKUSAI_NOTIFY_URL }}"
    assert not any("--hokusai-notify-url" in str(s.get("run", "")) for s in steps)
    assert WORKFLOW.read_text(encoding="utf-8").count("secrets.HOKUSAI_NOTIFY_URL") == 1
