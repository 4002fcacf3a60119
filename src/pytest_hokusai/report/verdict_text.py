"""The sentence every output (terminal, Markdown, HTML) shows when the run has no finding.

No finding does not mean a pass: a run whose live checks all skipped has nothing verified and its
verdict is FAIL (a deploy gate never passes by skipping), so the sentence says what really happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["count_outcomes", "no_finding_sentence"]


def _checks(n: int) -> str:
    return f"{n} live check{'s' if n != 1 else ''}"


def count_outcomes(outcomes: Iterable[object]) -> dict[str, int]:
    """outcome -> how many live checks had it (``passed``, ``skipped``, ...)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[str(outcome)] = counts.get(str(outcome), 0) + 1
    return counts


def no_finding_sentence(verdict: str, counts: Mapping[str, int]) -> str:
    """What to say instead of a root cause, from the verdict and :func:`count_outcomes`."""
    passed, skipped = counts.get("passed", 0), counts.get("skipped", 0)
    if verdict.lower() == "pass":
        if skipped:
            return f"No finding: {_checks(passed)} passed, {skipped} skipped."
        return "No finding: every selected live check passed."
    if counts.get("failed", 0) or counts.get("error", 0):
        return "No diagnosis was made; see the failed checks below."
    if skipped and not passed:
        return (f"No finding, but nothing was verified: every selected live check skipped ({_checks(skipped)}); "
                "a deploy gate never passes by skipping, so the verdict is FAIL. The skip reasons name what "
                "enables the checks.")
    if not counts:
        return "No finding, but no live check ran, so nothing was verified; the verdict is FAIL."
    return "No finding, but no live check passed, so the verdict is FAIL; see the checks below."
