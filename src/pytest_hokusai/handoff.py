"""The end-of-run hand-off: issue reports, GitHub summaries and the notification (issue 13).

:func:`run_handoff` is called once per run, on the controller (never on an xdist worker), after
the diagnosis: it writes ``--hokusai-report-issues`` reports, appends the Markdown summary to
``GITHUB_STEP_SUMMARY`` and prepares the ``GITHUB_ACTIONS`` annotations, and sends the
``--hokusai-notify-url`` message. Nothing here changes the verdict or raises: each step's failure
becomes a warning line for the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .secret import redact
from .settings import EXPIRED_KEY_ENV, KEY_ENV, READONLY_KEY_ENV, REVOKED_KEY_ENV, extra_key

if TYPE_CHECKING:
    from .runtime import HokusaiRun
    from .settings import HokusaiSettings

__all__ = ["HandoffOutcome", "key_variables", "plugin_version", "run_handoff"]


@dataclass
class HandoffOutcome:
    """What the hand-off did, for the terminal summary."""

    lines: list[str] = field(default_factory=list)  #: what was written or sent
    annotations: list[str] = field(default_factory=list)  #: GitHub workflow commands, printed raw
    warnings: list[str] = field(default_factory=list)  #: steps that failed (the verdict is unchanged)


def plugin_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-hokusai")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def key_variables(run: HokusaiRun, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Masked key -> the environment variable a reproduction reads it from."""
    info = run.local.info if run.local is not None else None
    keys = info.keys if info is not None else run.base_keys
    out: dict[str, str] = {}
    expired = extra_key(EXPIRED_KEY_ENV, environ)
    for secret, name in ((expired, EXPIRED_KEY_ENV), (keys.revoked, REVOKED_KEY_ENV),
                         (keys.readonly, READONLY_KEY_ENV), (keys.primary, KEY_ENV)):
        if secret:
            out[secret.masked] = name  # the primary key wins a (rare) clash of masked forms
    return out


def _wanted(settings: HokusaiSettings, environ: Mapping[str, str]) -> bool:
    return bool(settings.report_issues or settings.notify_url or environ.get("GITHUB_STEP_SUMMARY")
                or environ.get("GITHUB_ACTIONS") == "true")


def run_handoff(run: HokusaiRun, settings: HokusaiSettings, environ: Mapping[str, str] | None = None
                ) -> HandoffOutcome:
    """Do every hand-off the settings and the environment ask for; never raise."""
    env = os.environ if environ is None else environ
    outcome = HandoffOutcome()
    if not _wanted(settings, env):
        return outcome
    try:
        report, baseline = _report(run, settings)
    except Exception as exc:  # noqa: BLE001 - the hand-off must never cost the verdict
        outcome.warnings.append(redact(f"hand-off skipped: could not build the report ({type(exc).__name__}: {exc})"))
        return outcome
    accepted = {f.code for f in run.state.findings if getattr(f, "accepted", False)}
    accepted |= {str(d.get("code")) for d in report.get("diagnoses") or [] if d.get("accepted")}
    if settings.report_issues is not None:
        _step(outcome, "issue reports", lambda: _issues(outcome, run, settings, report, baseline, accepted, env))
    if env.get("GITHUB_STEP_SUMMARY"):
        _step(outcome, "GitHub step summary", lambda: _summary(outcome, run, settings, report, env))
    if env.get("GITHUB_ACTIONS") == "true":
        _step(outcome, "GitHub annotations", lambda: _annotations(outcome, report, accepted))
    if settings.notify_url is not None:
        _step(outcome, "notification", lambda: _notify(outcome, settings, report, accepted))
    return outcome


def _step(outcome: HandoffOutcome, what: str, action: Any) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - reported as a warning, the verdict stays
        outcome.warnings.append(redact(f"{what} failed: {type(exc).__name__}: {exc}"))


def _report(run: HokusaiRun, settings: HokusaiSettings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from .report.json_report import build_json_report

    report = build_json_report(run.state, settings, run.state.target or run.target_block())
    baseline = None
    if settings.baseline is not None:
        from .baseline import load_baseline

        try:
            baseline = load_baseline(settings.baseline)
        except Exception:  # noqa: BLE001 - the terminal summary already says why
            baseline = None
    return report, baseline


def _issues(outcome: HandoffOutcome, run: HokusaiRun, settings: HokusaiSettings, report: dict[str, Any],
            baseline: dict[str, Any] | None, accepted: set[str], env: Mapping[str, str]) -> None:
    from .report.issues import render_issues, write_issues

    assert settings.report_issues is not None
    issues = render_issues(report, run.state.exchanges(), key_vars=key_variables(run, env), accepted=accepted,
                           baseline=baseline, baseline_path=str(settings.baseline) if settings.baseline else None,
                           plugin_version=plugin_version(), now=datetime.now(timezone.utc))
    paths = write_issues(settings.report_issues, issues)
    if paths:
        owners = ", ".join(f"{i.code} -> {i.owner}" for i in issues)
        outcome.lines.append(f"hokusai issue reports: {len(paths)} in {settings.report_issues} ({owners})")
    else:
        outcome.lines.append(f"hokusai issue reports: none (no finding); {settings.report_issues} holds none")


def _summary(outcome: HandoffOutcome, run: HokusaiRun, settings: HokusaiSettings, report: dict[str, Any],
             env: Mapping[str, str]) -> None:
    from .report.github import append_step_summary
    from .report.markdown import render_markdown

    text = render_markdown(report, generated_at=datetime.now(timezone.utc))
    diff = run.baseline_diff
    if diff is None and settings.baseline is not None:
        from .baseline import compare, load_baseline

        diff = compare(load_baseline(settings.baseline), report)
    if diff is not None:
        from .baseline import render_markdown as baseline_markdown

        text += "\n" + "\n".join(baseline_markdown(diff, factor=settings.regression_factor)) + "\n"
    if settings.report_issues is not None and report.get("diagnoses"):
        text += (f"\nReady-to-file issue reports, one per finding, are in `{settings.report_issues}` "
                 "(uploaded with the job's artifacts).\n")
    append_step_summary(env["GITHUB_STEP_SUMMARY"], text)
    outcome.lines.append("hokusai: summary appended to GITHUB_STEP_SUMMARY")


def _annotations(outcome: HandoffOutcome, report: dict[str, Any], accepted: set[str]) -> None:
    from .report.github import workflow_commands

    outcome.annotations.extend(workflow_commands(report, accepted))


def _notify(outcome: HandoffOutcome, settings: HokusaiSettings, report: dict[str, Any], accepted: set[str]) -> None:
    from .notify import build_message, send_notification

    assert settings.notify_url is not None
    result = send_notification(settings.notify_url, build_message(report, accepted=accepted))
    if result.ok:
        outcome.lines.append(f"hokusai: notification sent to {settings.notify_url.masked}")
    else:
        outcome.warnings.append(f"notification to {settings.notify_url.masked} failed: {result.problem}; "
                                "the verdict is unchanged")
