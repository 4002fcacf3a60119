"""Known issues (``--hokusai-accept CODE[,CODE]``) and leftovers, for the hooks and the terminal.

A failing live check whose diagnosis code is accepted is reported as an expected failure: its report
becomes ``skipped`` with ``wasxfail`` set, the way pytest's own xfail does it after the fact, so no
``xfail`` marker is added and ``xfail_strict = true`` (this repository's and many host projects'
setting) has nothing to act on: a check that passes stays a plain pass. The finding stays in every
report, marked ``accepted``, and does not fail the verdict.
"""

from __future__ import annotations

import re
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
    """Terminal lines for what the run could not remove, grouped so that one cause reads once.

    Leftovers of one kind whose removal reads the same but for the name (the usual case: every
    canary model stayed for the same reason) become one entry: the names, each distinct reason with
    how many it applies to, and the removal once with ``<name>``. The JSON, Markdown and HTML
    reports keep one entry per leftover.
    """
    groups: dict[tuple[str, str], list[Leftover]] = {}
    for left in leftovers:
        groups.setdefault((left.kind, _remove_template(left)), []).append(left)
    lines = []
    for (kind, remove), members in groups.items():
        if len(members) == 1:
            left = members[0]
            lines.append(f"{kind} {left.name}: {left.why}")
            if left.remove:
                lines.append(f"    remove: {left.remove}")
            continue
        lines.append(f"{len(members)} {kind}s: {', '.join(m.name for m in members)}")
        reasons: dict[str, list[str]] = {}
        for m in members:
            reasons.setdefault(_reason(m.why), []).append(m.name)
        # The commonest reason last, as "the other N"; the rarer ones name the leftovers they hit.
        ordered = sorted(reasons.items(), key=lambda item: len(item[1]))
        for reason, names in ordered[:-1]:
            lines.append(f"    why ({', '.join(names)}): {reason}")
        reason, names = ordered[-1]
        lines.append(f"    why ({'the other ' if len(ordered) > 1 else 'all '}{len(names)}): {reason}")
        if remove:
            lines.append(f"    remove, for each: {remove}")
    return lines


def _remove_template(left: Leftover) -> str:
    """``left.remove`` with its own name replaced by ``<name>`` (what the group has in common)."""
    return left.remove.replace(repr(left.name), "<name>").replace(left.name, "<name>") if left.name else left.remove


def _reason(why: str) -> str:
    """The cause in a clean-up message, without which version numbers it hit."""
    return re.sub(r"^delete versions? [0-9][0-9, ]*: ", "", why)
