"""The run's written outputs: the JSON and Markdown reports (with the baseline comparison) and the
hand-off (issue reports, GitHub summary and annotations, notification) with its terminal lines.

Called at the end of the run (:mod:`.hooks_impl`) and, for a usage error that stops the run before
any check, by :mod:`.preflight`, so a pipeline still finds a verdict.
"""

from __future__ import annotations

from typing import Any, Protocol

from .runtime import HokusaiRun
from .settings import HokusaiSettings

__all__ = ["StdoutWriter", "baseline_diff", "print_handoff", "run_handoff", "write_reports"]


class LineWriter(Protocol):
    def write_line(self, line: str, **markup: Any) -> None: ...


def write_reports(run: HokusaiRun, settings: HokusaiSettings) -> None:
    """Write ``--hokusai-report-json`` / ``--hokusai-report-md`` (each only if set)."""
    if settings.report_json is None and settings.report_md is None:
        return
    from datetime import datetime, timezone

    from .report.json_report import build_json_report, write_json_report
    from .report.markdown import render_markdown, write_markdown

    report = build_json_report(run.state, settings, run.state.target or run.target_block())
    diff = baseline_diff(run, settings, report)
    if diff is not None:
        report["baseline"] = {"path": str(settings.baseline), **diff.to_dict()}
    if settings.report_json is not None:
        write_json_report(settings.report_json, report)
    if settings.report_md is not None:
        text = render_markdown(report, generated_at=datetime.now(timezone.utc))
        if diff is not None:
            from .baseline import render_markdown as baseline_markdown

            text += "\n" + "\n".join(baseline_markdown(diff, factor=settings.regression_factor)) + "\n"
        write_markdown(settings.report_md, text)


def baseline_diff(run: HokusaiRun, settings: HokusaiSettings, report: dict[str, Any] | None = None) -> Any:
    """Compare this run with ``--hokusai-baseline`` (None when no baseline is set); computed once."""
    if settings.baseline is None:
        return None
    if run.baseline_diff is None:
        from .baseline import compare, load_baseline
        from .report.json_report import build_json_report

        current = report or build_json_report(run.state, settings, run.state.target or run.target_block())
        run.baseline_diff = compare(load_baseline(settings.baseline), current)
    return run.baseline_diff


def run_handoff(run: HokusaiRun, settings: HokusaiSettings) -> Any:
    """Issue reports, GitHub summary and annotations, notification (never raises)."""
    from .handoff import run_handoff as handoff

    return handoff(run, settings)


class StdoutWriter:
    """A terminal reporter's ``write_line`` for when there is none (a usage error ends the run first)."""

    def write_line(self, line: str, **markup: Any) -> None:
        print(line, flush=True)


def print_handoff(tr: LineWriter, outcome: Any) -> None:
    """The hand-off's own lines, its warnings, and the GitHub workflow commands (raw ``::`` lines)."""
    if outcome is None:
        return
    for line in outcome.lines:
        tr.write_line(line)
    for line in outcome.warnings:
        tr.write_line(f"hokusai warning: {line}", yellow=True)
    for line in outcome.annotations:  # workflow commands: raw lines that start with "::"
        tr.write_line(line)
