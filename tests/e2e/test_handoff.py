"""The hand-off end to end (issue 13): issue reports, GitHub summary and annotations, notification.

For three faults of the stack, each with one run of the fast selection on the shared e2e stack
(``FAST_SELECTION``, no MLflow client; a few seconds each), with ``--hokusai-report-issues``,
``--hokusai-notify-url`` pointed at a loopback receiver and ``GITHUB_STEP_SUMMARY`` /
``GITHUB_ACTIONS`` set:

* the issue reports are written, primary first, and name the owner the catalogue gives the code;
* the primary report's ``curl`` reproduction, run with bash and the keys exported, gets the same
  status and detail as the failing exchange the JSON report's evidence recorded;
* the key scanner of test_leaks finds no key (raw or its secret part, plain or base64) in the
  reports, the step summary or the notification;
* the step summary holds the verdict and the root cause, stdout one ``::error`` line per finding;
* the receiver got exactly one notification, with the verdict, the root cause and its owner.

For one fault the report's MLflow client snippet is run too (one mlflow import) and fails with the
same detail. Runs whose notify URL is unreachable or never answers keep their verdict and exit code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.diagnosis.ownership import OWNERS
from pytest_hokusai.report.repro import answer_of, detail_of
from pytest_hokusai.stack.faults import FAULTS
from tests.support.webhook import serve_webhook

from . import _leakstack as ls
from .conftest import FAST_SELECTION, LiveRun, closed_port_url

#: fault -> the team its diagnosis is addressed to
HANDOFF_FAULTS = {"wrong-service-id": "api-service", "strip-auth": "api-service", "auth-body-only": "auth-service"}
EVIDENCE_LINE = re.compile(r"^(?P<method>[A-Z]+) (?P<url>\S+) \[(?P<auth>[^\]]*)\] -> (?P<status>\d{3}) ?(?P<body>.*?) "
                           r"\(\d+ ms\)$")


def _curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("needs curl on PATH to run the reproductions: apt-get install -y curl")
    return path


def _bash_block(text: str) -> list[str]:
    match = re.search(r"### curl\n\n```bash\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no curl block in the report:\n{text}"
    return match.group(1).splitlines()


def _python_block(text: str) -> str:
    match = re.search(r"### MLflow client\n\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no MLflow client block in the report:\n{text}"
    return match.group(1)


def _first_repro(lines: list[str]) -> tuple[list[str], str, str]:
    """(setup lines, the first command, its "recorded answer" comment)."""
    setup = [line for line in lines if not line.startswith(("#", "curl "))]
    comment = next(line for line in lines if line.startswith("# 1. "))
    command = lines[lines.index(comment) + 1:]
    command = [line for line in command if not line.startswith("#")]
    return setup, command[0], comment


def _recorded(primary: dict[str, Any], command: str) -> tuple[int, str]:
    """Status and body excerpt of the evidence line whose method and URL the command repeats."""
    words = shlex.split(command)
    method = words[words.index("-X") + 1] if "-X" in words else "GET"
    for line in primary["evidence"]:
        match = EVIDENCE_LINE.match(line)
        if match and match["method"] == method and match["url"] == words[-1]:
            return int(match["status"]), match["body"]
    raise AssertionError(f"no evidence line matches {method} {words[-1]}: {primary['evidence']}")


def _same_detail(recorded_body: str, curl_output: str) -> bool:
    """The answer names the failure as the recording did: the same JSON detail, or for an excerpt that
    was cut short (or is no JSON) the same text up to where the excerpt ends."""
    try:
        json.loads(recorded_body)
    except ValueError:
        body = " ".join(curl_output.rpartition("\nHTTP ")[0].split())
        return body.startswith(" ".join(recorded_body.rstrip("\u2026").split())[:100])
    return detail_of(recorded_body) == answer_of(curl_output)[1]


def _key_env(run_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    env.update(run_env)
    return env


def _scan(keys: Any, files: dict[str, bytes]) -> list[str]:
    leaks: list[str] = []
    for secret in (keys.write, keys.readonly, keys.revoked, keys.expired):
        targets = ls.needles(secret)
        for where, data in files.items():
            leaks += ls._hits(where, data, targets)
    return leaks


@pytest.mark.parametrize("fault", sorted(HANDOFF_FAULTS))
def test_issue_reports_reproduce_the_failure(run_live: Any, e2e_keys: Any, tmp_path: Path, fault: str) -> None:
    curl = _curl()
    issues_dir = tmp_path / "issues"
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step's summary\n", encoding="utf-8")
    with serve_webhook("ok") as hook:
        run: LiveRun = run_live(*FAST_SELECTION, f"--hokusai-report-issues={issues_dir}",
                                f"--hokusai-notify-url={hook.url}", faults=[fault],
                                env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
        received = list(hook.received)
    code = FAULTS[fault].code
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    primary = run.primary
    assert primary["code"] == code, run.explain()
    assert primary["owner"] == HANDOFF_FAULTS[fault] == OWNERS[code]
    assert all(d["owner"] == OWNERS[d["code"]] for d in run.report["diagnoses"])
    assert f"ROOT CAUSE: {code} " in run.output and f"    owner: {OWNERS[code]}" in run.output

    # one report per finding, primary first, each naming its owner
    files = sorted(issues_dir.iterdir())
    assert [p.name for p in files] == [f"{i:02d}-{d['code']}.md" for i, d in enumerate(run.report["diagnoses"], 1)]
    text = files[0].read_text(encoding="utf-8")
    assert text.startswith(f"# {code} on 127.0.0.1:"), text[:200]
    assert f"| Owner | `{OWNERS[code]}`" in text
    for section in ("## Impact on third parties", "## Since when", "## Reproduce", "## Expected against actual",
                    "## Evidence", "## Remedy", "## Versions"):
        assert section in text, f"{section} missing:\n{text}"
    assert "$HOKUSAI_API_KEY" in text

    # the curl reproduction answers as the recorded failing exchange did
    setup, command, comment = _first_repro(_bash_block(text))
    assert command.startswith("curl ") and "the failing request" in comment, (command, comment)
    status, body = _recorded(primary, command)
    assert status >= 400, primary["evidence"]
    script = "\n".join(["set -e", *setup, command.replace("curl ", f"{curl} ", 1)])
    done = subprocess.run(["bash", "-c", script], env=_key_env(e2e_keys.env()), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answered_status, answered_detail = answer_of(done.stdout)
    assert answered_status == status, (command, done.stdout, primary["evidence"])
    assert _same_detail(body, done.stdout), (body, answered_detail)

    # the summary on the job page, the annotations on stdout, one notification
    summary_text = summary.read_text(encoding="utf-8")
    assert summary_text.startswith("earlier step's summary\n"), "the summary must be appended, not replaced"
    assert "**FAIL**" in summary_text and f"`{code}`" in summary_text and "Root cause" in summary_text
    annotations = [line for line in run.result.outlines if line.startswith("::")]
    assert annotations[0].startswith(f"::error title={code}::"), annotations
    assert len(annotations) == len(run.report["diagnoses"]), annotations
    assert len(received) == 1, [r.path for r in received]
    message = received[0].json()
    assert message["hokusai"]["verdict"] == "fail"
    assert message["hokusai"]["root_cause"]["code"] == code
    assert message["hokusai"]["root_cause"]["owner"] == OWNERS[code]
    assert code in message["text"] and "FAIL" in message["text"]
    assert hook.url.split("/", 3)[3] not in run.output, "the notify URL's path (its secret) was printed"
    host = hook.url.split("/services/")[0]
    assert f"hokusai: hand-off: issue reports {issues_dir}, notify {host}/\u2026" in run.output
    assert f"hokusai: notification sent to {host}/\u2026" in run.output

    # no key anywhere in what was handed off
    handed = {str(p): p.read_bytes() for p in files}
    handed[str(summary)] = summary.read_bytes()
    handed["notification"] = received[0].body
    assert not _scan(e2e_keys, handed)

    if fault == "wrong-service-id":
        _run_mlflow_snippet(text, e2e_keys, body)


def _run_mlflow_snippet(text: str, keys: Any, recorded_body: str) -> None:
    snippet = _python_block(text)
    done = subprocess.run([sys.executable, "-c", snippet], env=_key_env(keys.env()), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0, "the MLflow client call should fail as the recorded exchange did"
    assert detail_of(recorded_body) in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("mode", ["unreachable", "slow"])
def test_failed_notification_keeps_the_verdict(run_live: Any, mode: str) -> None:
    """An unreachable or never-answering webhook is a warning; the verdict and exit code stay."""
    if mode == "unreachable":
        run = run_live(*FAST_SELECTION, f"--hokusai-notify-url={closed_port_url()}/hooks/abcdefgh12345",
                       faults=["wrong-service-id"])
    else:
        with serve_webhook("slow") as hook:
            run = run_live(*FAST_SELECTION, f"--hokusai-notify-url={hook.url}", faults=["wrong-service-id"])
            assert 1 <= len(hook.received) <= 2, "one try and at most one retry"
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == "SERVICE_ID_REJECTED"
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    warning = [line for line in run.result.outlines if line.startswith("hokusai warning: notification")]
    assert warning and "the verdict is unchanged" in warning[0], run.output[-3000:]
    assert "abcdefgh12345" not in run.output and "not-a-real-secret" not in run.output


def test_a_failing_hand_off_step_is_a_warning(run_live: Any, tmp_path: Path) -> None:
    """An issue-report folder that cannot be created costs a warning, not the verdict (no stack:
    the target's ports are closed, so the run fails fast with HOST_UNREACHABLE)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be", encoding="utf-8")
    run = run_live(*FAST_SELECTION, f"--hokusai-report-issues={blocker}", use_stack=False,
                   api_url=closed_port_url(), auth_url=closed_port_url(), env={"HOKUSAI_API_KEY": ls.random_key().reveal()})
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == "HOST_UNREACHABLE" and run.primary["owner"] == "infrastructure"
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert any(line.startswith("hokusai warning: issue reports failed") for line in run.result.outlines), run.output
    assert blocker.read_text(encoding="utf-8") == "a file where the folder should be"


@pytest.mark.slow
def test_xdist_run_sends_one_notification(run_live: Any, tmp_path: Path) -> None:
    """Under pytest-xdist only the controller hands off: one message, one set of issue reports."""
    pytest.importorskip("xdist")
    issues_dir = tmp_path / "issues"
    with serve_webhook("ok") as hook:
        run = run_live("-n", "2", *FAST_SELECTION, f"--hokusai-report-issues={issues_dir}",
                       f"--hokusai-notify-url={hook.url}", faults=["wrong-service-id"])
        received = list(hook.received)
    assert run.report is not None and run.primary["code"] == "SERVICE_ID_REJECTED", run.explain()
    assert len(received) == 1, [r.body[:200] for r in received]
    assert received[0].json()["hokusai"]["root_cause"]["code"] == "SERVICE_ID_REJECTED"
    assert min(p.name for p in issues_dir.iterdir()) == "01-SERVICE_ID_REJECTED.md"
    text = (issues_dir / "01-SERVICE_ID_REJECTED.md").read_text(encoding="utf-8")
    assert "# 1. the failing request" in text, "workers' exchanges reach the controller's reports"


def test_missing_key_is_handed_off_too(run_live: Any, tmp_path: Path) -> None:
    """`-m live` with no key stops with a usage error before any check; the gate's hand-off still
    happens: annotation, job summary, notification and an issue report for KEY_MISSING (owner client)."""
    summary = tmp_path / "summary.md"
    issues_dir = tmp_path / "issues"
    with serve_webhook("ok") as hook:
        run = run_live(f"--hokusai-report-issues={issues_dir}", f"--hokusai-notify-url={hook.url}", use_stack=False,
                       env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
        received = list(hook.received)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    assert run.report is not None and run.primary["code"] == "KEY_MISSING" and run.primary["owner"] == "client"
    assert any(line.startswith("::error title=KEY_MISSING::") for line in run.result.outlines), run.output
    assert "`KEY_MISSING`" in summary.read_text(encoding="utf-8")
    assert len(received) == 1 and received[0].json()["hokusai"]["root_cause"]["code"] == "KEY_MISSING"
    assert [p.name for p in issues_dir.iterdir()] == ["01-KEY_MISSING.md"]


def test_collect_only_hands_nothing_off(run_live: Any, tmp_path: Path) -> None:
    """`--collect-only -m live` runs no check: no notification, no annotation, no issue report."""
    issues_dir = tmp_path / "issues"
    with serve_webhook("ok") as hook:
        run = run_live("--collect-only", f"--hokusai-report-issues={issues_dir}", f"--hokusai-notify-url={hook.url}",
                       use_stack=False, api_url=closed_port_url(), auth_url=closed_port_url(), expect_report=False,
                       env={"HOKUSAI_API_KEY": ls.random_key().reveal(), "GITHUB_ACTIONS": "true"})
        received = list(hook.received)
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert received == [] and not issues_dir.exists()
    assert not [line for line in run.result.outlines if line.startswith("::")]
