"""Known issues (``--hokusai-accept CODE[,CODE]``) and leftovers, for the hooks and the terminal.

A failing live check whose diagnosis code is accepted is reported as an expected failure: its report
becomes ``skipped`` with ``wasxfail`` set, the way pytest's own xfail does it after the fact, so no
``xfail`` marker is added and ``xfail_strict = true`` (this repository's and many host projects'
setting) has nothing to act on: a check that passes stays a plain pass. The finding stays in every
report, marked ``accepted``, and does not fail the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from .state import Finding, Leftover

__all__ = ["ACCEPTED_NOTE", "XFAILED", "accept_as_xfail", "leftover_lines", "mark_accepted"]

#: The JSON ``checks[].outcome`` of a check an accepted finding explains.
XFAILED = "xfailed"
ACCEPTED_NOTE = "accepted known issue (--hokusai-accept)"


def accept_as_xfail(report: pytest.TestReport, finding: Finding) -> None:
    """Turn a failed call report into an expected failure that carries the code and summary."""
    report.outcome = "skipped"
    report.wasxfail = f"{finding.code}: {ACCEPTED_NOTE}: {finding.summary}"


def mark_accepted(findings: Iterable[Finding], accepted: Iterable[str]) -> None:
    codes = set(accepted)
    for finding in findings:
        finding.accepted = finding.code in codes


def leftover_lines(leftovers: Iterable[Leftover]) -> list[str]:
    """Terminal lines: one per leftover with why it stayed and how to remove it."""
    lines = []
    for left in leftovers:
        lines.append(f"{left.kind} {left.name}: {left.why}")
        if left.remove:
            lines.append(f"    remove: {left.remove}")
    return lines
