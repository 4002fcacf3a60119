"""One live check's report: what it carries, how its failure is labelled, what the run records.

On the process that ran the check, :func:`annotate` puts the check's exchanges, timings, diagnosis
and leftovers into the report's ``hokusai`` attribute (xdist serialises it to the controller) and
starts the failure message with ``CODE: summary``. On the controller, :func:`check_result` turns the
report into the run's :class:`~.state.CheckResult`.
"""

from __future__ import annotations

from typing import Any

import pytest
from _pytest._code.code import ExceptionRepr

from .evidence import Exchange
from .markers import concern_names
from .run_diagnosis import diagnose_failure
from .runtime import HokusaiRun
from .secret import redact
from .settings import HokusaiSettings
from .state import CheckResult, Finding

__all__ = ["REPORT_ATTR", "annotate", "check_result", "exchange_timings", "is_live", "prefix_failure",
           "report_data", "short_message"]

REPORT_ATTR = "hokusai"  # custom TestReport attribute; pytest-xdist serialises it to the controller


def is_live(item_or_report: Any) -> bool:
    return "live" in getattr(item_or_report, "keywords", {})


def report_data(report: pytest.TestReport) -> dict[str, Any]:
    """What :func:`annotate` attached to the report (empty when nothing)."""
    return getattr(report, REPORT_ATTR, None) or {}


def annotate(run: HokusaiRun, item: pytest.Item, report: pytest.TestReport,
             call: pytest.CallInfo[Any] | None = None, *, is_worker: bool = False) -> None:
    """Attach the check's exchanges, timings, diagnosis, facts and (on a worker) leftovers."""
    recorder = run.state.recorder
    exchanges: list[Exchange] = []
    data: dict[str, Any] = {}
    if report.when == "call" or report.failed:
        exchanges = recorder.for_node(item.nodeid)
        data["exchanges"] = [ex.to_dict() for ex in exchanges]
        data["timings"] = run.drain_measurements(item.nodeid)
    if report.failed:
        # A check that crashed by itself (the suite, a fixture, the host's settings) is not a
        # deployment finding: SUITE_ERROR with its exception, never the deployment's code.
        finding = None
        if call is not None and call.excinfo is not None:
            from .diagnosis.matchers.suite import suite_error_for_check

            finding = suite_error_for_check(item.nodeid, report.when, call.excinfo.value)
            if finding is not None:
                data["suite_error"] = finding.evidence[0]
        if finding is None:
            finding = diagnose_failure(run, exchanges)
        if finding is not None:
            data["diagnosis"] = finding.code
            data["summary"] = finding.summary
            data["remediation"] = finding.remediation
            report.hokusai_diagnosis = finding.code  # type: ignore[attr-defined]  # read by report.html
            prefix_failure(report, finding)
            if report.when == "call" and finding.code in run.base_settings.accept:
                from .known_issues import accept_as_xfail

                accept_as_xfail(report, finding)  # a known issue: xfail carrying the code
                data["accepted"] = True
        if run.triage is not None and run.triage.facts:
            # facts found by checks (revocation delay, latency misses) travel to the controller
            data["facts"] = dict(run.triage.facts)
    leftovers = run.state.drain_unsent_leftovers()
    if leftovers and is_worker:  # the controller lists them (RunState.leftovers)
        data["leftovers"] = [left.to_dict() for left in leftovers]
    if data:
        setattr(report, REPORT_ATTR, data)


def check_result(report: pytest.TestReport, data: dict[str, Any]) -> CheckResult:
    """The run's record of one phase's report (a setup error or skip, or the call's outcome)."""
    outcome: str = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
    if report.when == "setup" and report.skipped:
        outcome = "skipped"
    if report.skipped and hasattr(report, "wasxfail"):
        from .known_issues import XFAILED

        outcome = XFAILED
    message = short_message(report) if report.failed or report.skipped else ""
    return CheckResult(nodeid=report.nodeid, outcome=outcome, duration_s=report.duration,
                       markers=concern_names(report.keywords), diagnosis=data.get("diagnosis"), message=message)


def exchange_timings(exchanges: list[Exchange], settings: HokusaiSettings | None) -> dict[str, list[float]]:
    """Latency samples from a check's successful exchanges: key validations and proxied requests."""
    out: dict[str, list[float]] = {}
    for ex in exchanges:
        if not ex.ok:
            continue
        if "/api/v1/keys/validate" in ex.url:
            out.setdefault("auth_validate_ms", []).append(ex.elapsed_ms)
        elif settings is not None and ex.url.startswith(settings.tracking_uri) and ex.label != "mlflow-client":
            out.setdefault("proxy_request_ms", []).append(ex.elapsed_ms)
    return out


def short_message(report: pytest.TestReport) -> str:
    """The failure's or skip's one line (redacted)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return redact(str(longrepr[2]))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return redact(str(crash.message).splitlines()[0] if crash.message else "")
    text = str(longrepr or "").strip().splitlines()
    return redact(text[-1] if text else "")


def prefix_failure(report: pytest.TestReport, finding: Finding) -> None:
    """Make the failure message start with the diagnosis code and summary (terminal, JUnit, HTML)."""
    head = f"{finding.code}: {finding.summary}"
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    # The evidence and the fix are printed once, in the "hokusai diagnosis" section at the end of the
    # run, not after every failing check; the check's own message starts with CODE: summary.
    if crash is not None:
        if not str(crash.message).startswith(finding.code):
            crash.message = f"{head}\n{crash.message}"
        if isinstance(longrepr, ExceptionRepr):
            longrepr.addsection("hokusai", head)
    elif isinstance(longrepr, str):
        if not longrepr.startswith(finding.code):
            report.longrepr = f"{head}\n\n{longrepr}"
    elif longrepr is not None and not isinstance(longrepr, tuple):
        report.longrepr = f"{head}\n\n{longrepr}"
