"""Compare a run with an earlier JSON report (``--hokusai-baseline PATH``).

:func:`load_baseline` reads and checks an earlier ``pytest-hokusai/1`` report; :func:`compare`
tells what was fixed since, what still fails, what newly fails, which diagnoses went away or
appeared, and how each latency measure's p50 moved; :func:`render_text` and
:func:`render_markdown` turn that into lines for the terminal summary and the Markdown report.
:func:`regression` is the performance check's rule: a p50 more than ``factor`` times the
baseline's, by more than a noise floor, is a regression.

Plain data and pure functions (the file read aside): no pytest, no network, no heavy imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError

__all__ = [
    "BASELINE_SETTING",
    "NOISE_FLOOR",
    "BaselineDiff",
    "baseline_p50",
    "compare",
    "load_baseline",
    "regression",
    "render_markdown",
    "render_text",
    "unit_of",
]

#: How the setting is named in error messages.
BASELINE_SETTING = "--hokusai-baseline (env HOKUSAI_BASELINE, ini hokusai_baseline)"
SCHEMA_PREFIX = "pytest-hokusai/"
SUPPORTED_MAJOR = 1
FAILING = frozenset({"failed", "error"})
#: A p50 must also grow by more than this (per unit) to count as a regression: on a fast link a few
#: milliseconds of jitter can double a small number without meaning anything.
NOISE_FLOOR: dict[str, float] = {"ms": 5.0, "s": 0.5}


def _problem(path: Path, what: str, fix: str = "") -> SettingsError:
    fix = fix or "Point it at a JSON report an earlier run wrote with --hokusai-report-json, or unset it."
    return SettingsError(f"The baseline report {str(path)!r} given by {BASELINE_SETTING} {what}. {fix}")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read an earlier ``--hokusai-report-json`` file and return it as a dict.

    Raises :class:`~pytest_hokusai.errors.SettingsError` naming the setting when the file is
    missing or unreadable, is not JSON, or is not a ``pytest-hokusai/1`` report (``schema``,
    a ``checks`` list of objects with ``nodeid`` and ``outcome``, a ``timings`` object).
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _problem(p, "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _problem(p, f"cannot be read: {reason}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _problem(p, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _problem(p, f"is not a JSON object (it is a {type(data).__name__})")
    schema = data.get("schema")
    major = str(schema).removeprefix(SCHEMA_PREFIX).split(".")[0] if isinstance(schema, str) else ""
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX) or major != str(SUPPORTED_MAJOR):
        raise _problem(p, f"has schema {schema!r}, not '{SCHEMA_PREFIX}{SUPPORTED_MAJOR}'")
    checks = data.get("checks")
    if not isinstance(checks, list):
        raise _problem(p, "has no 'checks' list")
    for i, row in enumerate(checks):
        if not (isinstance(row, dict) and isinstance(row.get("nodeid"), str) and isinstance(row.get("outcome"), str)):
            raise _problem(p, f"has a malformed checks[{i}] (needs 'nodeid' and 'outcome' strings)")
    timings = data.setdefault("timings", {})
    if not isinstance(timings, dict):
        raise _problem(p, "has a 'timings' value that is not an object")
    diagnoses = data.setdefault("diagnoses", [])
    if not isinstance(diagnoses, list):
        raise _problem(p, "has a 'diagnoses' value that is not a list")
    return data


# -- reading numbers ----------------------------------------------------------------------------
def unit_of(measure: str) -> str:
    """``ms`` or ``s`` from a measure's name (``proxy_request_ms``, ``registration_s``); else ``""``."""
    if measure.endswith("_ms"):
        return "ms"
    if measure.endswith("_s"):
        return "s"
    return ""


def baseline_p50(report: Mapping[str, Any], measure: str) -> float | None:
    """The p50 of ``measure`` in a report's ``timings`` (a ``{p50, p95, n}`` object, or a plain number
    such as ``registration_s``); ``None`` when absent, not a number, or without samples (0)."""
    timings = report.get("timings")
    if not isinstance(timings, Mapping):
        return None
    value = timings.get(measure)
    if isinstance(value, Mapping):
        if not value.get("n"):
            return None
        value = value.get("p50")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms" if value >= 1 else f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g}"


def regression(measure: str, before: float | None, after: float, factor: float) -> str | None:
    """A sentence when ``after`` (this run's p50) regressed beyond ``factor`` times ``before`` (the
    baseline's) and by more than :data:`NOISE_FLOOR` for the unit; else ``None``.

    >>> regression("proxy_request_ms", 40.0, 130.0, 2.0)
    "proxy_request_ms p50 130 ms is 3.25x the baseline's 40 ms (allowed: 2x)"
    >>> regression("proxy_request_ms", 2.0, 5.0, 2.0) is None  # within the noise floor
    True
    """
    if before is None or before <= 0:
        return None
    unit = unit_of(measure)
    if after <= before * factor or after - before <= NOISE_FLOOR.get(unit, 0.0):
        return None
    return (f"{measure} p50 {_fmt(after, unit)} is {after / before:.2f}x the baseline's "
            f"{_fmt(before, unit)} (allowed: {factor:g}x)")


# -- the comparison -----------------------------------------------------------------------------
@dataclass
class BaselineDiff:
    """What changed between a baseline report and this run's.

    ``latency`` maps each measure both reports have to ``(before_p50, after_p50, factor)``, with
    ``factor = after / before``.
    """

    fixed: list[str] = field(default_factory=list)  #: failed (or errored) then, passed now
    still_failing: list[str] = field(default_factory=list)  #: failed then and now
    newly_failing: list[str] = field(default_factory=list)  #: passed, skipped or absent then; failed now
    latency: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    resolved_diagnoses: list[str] = field(default_factory=list)  #: codes in the baseline only
    new_diagnoses: list[str] = field(default_factory=list)  #: codes in this run only
    previous_verdict: str | None = None
    current_verdict: str | None = None

    def regressions(self, factor: float) -> list[str]:
        """One sentence per measure whose p50 regressed beyond ``factor`` (see :func:`regression`)."""
        found = [regression(m, before, after, factor) for m, (before, after, _) in self.latency.items()]
        return [line for line in found if line]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for the JSON report's ``baseline`` key)."""
        return {
            "fixed": list(self.fixed),
            "still_failing": list(self.still_failing),
            "newly_failing": list(self.newly_failing),
            "latency": {m: {"before_p50": b, "after_p50": a, "factor": f} for m, (b, a, f) in self.latency.items()},
            "resolved_diagnoses": list(self.resolved_diagnoses),
            "new_diagnoses": list(self.new_diagnoses),
            "previous_verdict": self.previous_verdict,
            "current_verdict": self.current_verdict,
        }


def _outcomes(report: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in report.get("checks") or []:
        if isinstance(row, Mapping) and isinstance(row.get("nodeid"), str):
            out[row["nodeid"]] = str(row.get("outcome", ""))
    return out


def _codes(report: Mapping[str, Any]) -> list[str]:
    codes = [d.get("code") for d in report.get("diagnoses") or [] if isinstance(d, Mapping)]
    return list(dict.fromkeys(c for c in codes if isinstance(c, str)))


def compare(previous_report: Mapping[str, Any], current_report: Mapping[str, Any]) -> BaselineDiff:
    """Compare this run's report with the baseline's (both ``pytest-hokusai/1`` dicts).

    Check lists follow this run's order. A check that failed then and is skipped or not selected
    now is in no list: nothing is known about it.
    """
    before, after = _outcomes(previous_report), _outcomes(current_report)
    diff = BaselineDiff(previous_verdict=previous_report.get("verdict"),
                        current_verdict=current_report.get("verdict"))
    for nodeid, outcome in after.items():
        was = before.get(nodeid)
        if outcome in FAILING:
            (diff.still_failing if was in FAILING else diff.newly_failing).append(nodeid)
        elif outcome == "passed" and was in FAILING:
            diff.fixed.append(nodeid)
    measures = list((current_report.get("timings") or {}).keys())
    for measure in measures:
        old, new = baseline_p50(previous_report, measure), baseline_p50(current_report, measure)
        if old is not None and new is not None:
            diff.latency[measure] = (old, new, round(new / old, 3))
    old_codes, new_codes = _codes(previous_report), _codes(current_report)
    diff.resolved_diagnoses = [c for c in old_codes if c not in new_codes]
    diff.new_diagnoses = [c for c in new_codes if c not in old_codes]
    return diff


# -- rendering ----------------------------------------------------------------------------------
def _listing(title: str, items: list[str], limit: int) -> list[str]:
    if not items:
        return [f"{title}: none"]
    lines = [f"{title} ({len(items)}):"]
    lines += [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


def render_text(diff: BaselineDiff, *, factor: float | None = None, limit: int = 20) -> list[str]:
    """Plain lines for the terminal summary (and a Markdown code block): the verdicts, the three
    check lists, the diagnoses that went away or appeared, and the p50 change per measure (marked
    ``REGRESSION`` when ``factor`` is given and exceeded)."""
    verdicts = (f"verdict: {str(diff.previous_verdict or '?').upper()} at the baseline, "
                f"{str(diff.current_verdict or '?').upper()} now")
    lines = [verdicts]
    lines += _listing("fixed since the baseline", diff.fixed, limit)
    lines += _listing("still failing", diff.still_failing, limit)
    lines += _listing("newly failing", diff.newly_failing, limit)
    if diff.resolved_diagnoses:
        lines.append("diagnoses gone since: " + ", ".join(diff.resolved_diagnoses))
    if diff.new_diagnoses:
        lines.append("new diagnoses: " + ", ".join(diff.new_diagnoses))
    if diff.latency:
        lines.append("latency p50 (baseline -> now):")
        for measure, (before, after, change) in diff.latency.items():
            unit = unit_of(measure)
            flag = ""
            if factor is not None and regression(measure, before, after, factor):
                flag = f"  REGRESSION (over {factor:g}x)"
            lines.append(f"  {measure}: {_fmt(before, unit)} -> {_fmt(after, unit)} (x{change:.2f}){flag}")
    else:
        lines.append("latency: no measure in common with the baseline")
    return lines


def render_markdown(diff: BaselineDiff, *, factor: float | None = None, limit: int = 50) -> list[str]:
    """Markdown lines (a ``## Compared with the baseline`` section) for the Markdown report."""
    verdicts = (f"Verdict: **{str(diff.previous_verdict or '?').upper()}** at the baseline, "
                f"**{str(diff.current_verdict or '?').upper()}** now.")
    lines = ["## Compared with the baseline", "", verdicts, ""]
    for title, items in (("Fixed since the baseline", diff.fixed), ("Still failing", diff.still_failing),
                         ("Newly failing", diff.newly_failing)):
        lines.append(f"**{title}** ({len(items)})" + (":" if items else ": none"))
        lines += [f"- `{item}`" for item in items[:limit]]
        if len(items) > limit:
            lines.append(f"- ... and {len(items) - limit} more")
        lines.append("")
    if diff.resolved_diagnoses or diff.new_diagnoses:
        lines.append(f"Diagnoses gone: {', '.join(diff.resolved_diagnoses) or 'none'}; "
                     f"new: {', '.join(diff.new_diagnoses) or 'none'}.")
        lines.append("")
    if diff.latency:
        lines += ["| measure | baseline p50 | now p50 | change |", "| --- | --- | --- | --- |"]
        for measure, (before, after, change) in diff.latency.items():
            unit = unit_of(measure)
            flag = " **regression**" if factor is not None and regression(measure, before, after, factor) else ""
            lines.append(f"| `{measure}` | {_fmt(before, unit)} | {_fmt(after, unit)} | x{change:.2f}{flag} |")
        lines.append("")
    return lines
