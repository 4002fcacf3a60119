"""What pytest-hokusai shows in the terminal, and when: the report header only where the plugin is
used, short tracebacks for failing live checks, and the ``hokusai diagnosis`` section at the end.

A failing live check's story is its diagnosis (``CODE: summary`` first in its message) and the
evidence in the ``hokusai diagnosis`` section at the end of the run; a long traceback through the
MLflow client's ``rest_utils`` adds hundreds of lines and nothing a deployment owner can act on. So
live checks default to ``--tb=short``; an explicit ``--tb`` from the user still wins (pytest's own
default, ``auto``, counts as not given).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import pytest

from .preflight import selects_live
from .run_reports import baseline_diff, print_handoff
from .runtime import HokusaiRun
from .secret import redact
from .settings import SETTINGS, HokusaiSettings

__all__ = ["LIVE_TBSTYLE", "header_wanted", "shorten_live_traceback", "write_diagnosis_section"]

#: The traceback style of failing live checks when the user gave no ``--tb``.
LIVE_TBSTYLE: Final = "short"
_ENV_PREFIX = "HOKUSAI_"


def header_wanted(config: pytest.Config, settings: HokusaiSettings,
                  environ: Mapping[str, str] | None = None) -> bool:
    """True when the run uses the plugin: a hokusai option or ini key is set, a ``HOKUSAI_*``
    environment variable is set, or the ``-m`` expression selects live checks. An unrelated
    project's run, with the plugin merely installed, prints no ``hokusai:`` line."""
    env = os.environ if environ is None else environ
    if any(name.startswith(_ENV_PREFIX) and value.strip() for name, value in env.items()):
        return True
    names = {spec.attr for spec in SETTINGS}
    if any(source != "default" and not source.startswith("derived") for name, source in settings.sources.items()
           if name in names):
        return True
    return selects_live(config)


def shorten_live_traceback(item: pytest.Item, call: pytest.CallInfo[Any], report: pytest.TestReport) -> None:
    """Re-render a failing live check's traceback in :data:`LIVE_TBSTYLE`, unless the user chose a
    ``--tb`` style. Messages from ``pytest.fail(..., pytrace=False)`` are left as they are."""
    if not report.failed or call.excinfo is None:
        return
    if str(item.config.getoption("tbstyle", "auto")) != "auto":
        return  # the user's explicit --tb wins
    excinfo = call.excinfo
    if isinstance(excinfo.value, pytest.fail.Exception) and not excinfo.value.pytrace:
        return
    if excinfo.errisinstance(pytest.FixtureLookupError):
        return  # pytest's own "fixture not found" text is already short
    try:
        report.longrepr = excinfo.getrepr(
            funcargs=True, abspath=False, showlocals=bool(item.config.getoption("showlocals", False)),
            style=LIVE_TBSTYLE, tbfilter=_without_library_frames(item), truncate_locals=True)
    except Exception:  # noqa: BLE001 - keep pytest's own rendering rather than lose the failure
        return


def _is_library(path: str) -> bool:
    """A frame of an installed third-party package (the MLflow client's rest_utils, requests ...)."""
    return ("site-packages" in path or "dist-packages" in path) and "pytest_hokusai" not in path


def _without_library_frames(item: pytest.Item) -> Callable[[Any], Any]:
    """pytest's own traceback filter for the item, then the installed libraries' frames dropped
    (the last frame, where the exception was raised, always stays)."""
    from _pytest._code.code import Traceback

    base = getattr(item, "_traceback_filter", None)

    def tbfilter(excinfo: Any) -> Any:
        traceback = base(excinfo) if base is not None else excinfo.traceback
        if len(traceback) <= 2:
            return traceback
        kept = [entry for entry in traceback[:-1] if not _is_library(str(entry.path))]
        return Traceback([*kept, traceback[-1]])

    return tbfilter


def write_diagnosis_section(tr: Any, run: HokusaiRun, handoff: Any) -> None:
    """The end-of-run ``hokusai diagnosis`` section: verdict, findings (root cause first, each with
    owner, evidence and fix), leftovers, the baseline comparison, report paths and the hand-off."""
    state = run.state
    if not state.live_checks and not state.findings and not state.leftovers:
        return
    tr.section("hokusai diagnosis", sep="=", bold=True, red=state.verdict == "fail",
               green=state.verdict == "pass")
    tr.write_line(f"verdict: {state.verdict.upper()}  (target {state.target.get('mode')}, "
                  f"api {state.target.get('api_url')}, key {state.target.get('key')})")
    if not state.findings:
        from .report.verdict_text import count_outcomes, no_finding_sentence

        tr.write_line(no_finding_sentence(state.verdict, count_outcomes(c.outcome for c in state.live_checks)))
    else:
        from .diagnosis.ownership import owner_of

        for finding in state.findings:
            head = "ROOT CAUSE" if finding.primary else "also"
            known = " (accepted known issue, --hokusai-accept)" if finding.accepted else ""
            tr.write_line(f"{head}: {finding.code} [{finding.category}]{known} {finding.summary}")
            tr.write_line(f"    owner: {owner_of(finding.code)}")
            for line in finding.evidence[:6]:
                tr.write_line(f"    evidence: {line}")
            if finding.remediation:
                tr.write_line(f"    fix: {finding.remediation}")
    if run.triage_error:
        tr.write_line(f"(diagnosis incomplete: {run.triage_error})")
    if state.leftovers:
        from .known_issues import leftover_lines

        tr.write_line(f"leftovers: {len(state.leftovers)} thing(s) this run created and could not remove "
                      "(later runs reuse the canary names, so they do not multiply):")
        for line in leftover_lines(state.leftovers):
            tr.write_line(f"  {line}")
    settings = run.base_settings
    try:
        diff = baseline_diff(run, run.settings_if_known() or settings)
    except Exception as exc:  # noqa: BLE001 - a bad baseline must not hide the verdict
        tr.write_line(f"hokusai baseline: not compared ({redact(str(exc))})")
        diff = None
    if diff is not None:
        from .baseline import render_text

        tr.section("hokusai baseline", sep="-")
        for line in render_text(diff, factor=settings.regression_factor):
            tr.write_line(line)
    for label, path in (("json", settings.report_json), ("markdown", settings.report_md)):
        if path is not None:
            tr.write_line(f"hokusai {label} report: {path}")
    print_handoff(tr, handoff)
