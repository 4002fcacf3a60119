"""The Markdown run summary (``--hokusai-report-md PATH``), in the style of a TEST_RESULTS.md.

:func:`render_markdown` is pure: it reads a ``pytest-hokusai/1`` report dict (see
:mod:`.json_report`) and returns text; :func:`write_markdown` writes it atomically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._redact import scrub
from .json_report import atomic_write_text
from .verdict_text import count_outcomes, no_finding_sentence

__all__ = ["TITLE", "cell", "code_span", "render_markdown", "write_markdown"]

TITLE = "Hokusai live check results"
_TARGET_LABELS = {
    "mode": "Mode",
    "api_url": "API URL",
    "auth_url": "Auth URL",
    "tracking_uri": "Tracking URI",
    "key": "API key",
}


def cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped, ``None`` as an em dash."""
    if value is None or value == "":
        return "\u2014"
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def code_span(text: str) -> str:
    """Inline code that survives backticks in ``text`` (fence longer than any run inside it)."""
    text = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _finding(lines: list[str], finding: Mapping[str, Any], heading: str) -> None:
    known = " \u2014 accepted known issue (`--hokusai-accept`)" if finding.get("accepted") else ""
    lines.append(f"{heading} `{finding.get('code', '?')}` ({finding.get('category', 'other')}){known}")
    lines.append("")
    if finding.get("owner"):
        lines += [f"**Owner:** `{finding['owner']}`", ""]
    if finding.get("summary"):
        lines += [" ".join(str(finding["summary"]).split()), ""]
    evidence = list(finding.get("evidence") or [])
    if evidence:
        lines.append("Evidence:")
        lines.append("")
        lines += [f"- {code_span(str(item))}" for item in evidence]
        lines.append("")
    if finding.get("remediation"):
        lines += [f"**Remedy:** {' '.join(str(finding['remediation']).split())}", ""]


def _fmt_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def _timestamp(generated_at: datetime) -> str:
    moment = generated_at.replace(tzinfo=timezone.utc) if generated_at.tzinfo is None else generated_at
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_markdown(report: Mapping[str, Any], *, generated_at: datetime) -> str:
    """Render a ``pytest-hokusai/1`` report as Markdown (scrubbed of keys).

    Sections: title, UTC timestamp (a naive ``generated_at`` is taken as UTC), the verdict
    (``PASS``/``FAIL``), the target, the primary diagnosis with evidence and remedy, other findings,
    a table of checks (node id, markers, outcome, duration, diagnosis) and a timings table.
    """
    verdict = str(report.get("verdict", "fail")).upper()
    target = dict(report.get("target") or {})
    diagnoses = list(report.get("diagnoses") or [])
    checks = list(report.get("checks") or [])
    timings = dict(report.get("timings") or {})

    lines = [f"# {TITLE}", ""]
    lines.append(f"Generated {_timestamp(generated_at)} (schema `{report.get('schema', '?')}`)")
    lines.append("")
    mark = "\u2705" if verdict == "PASS" else "\u274c"
    lines += [f"## Verdict: {mark} **{verdict}**", ""]
    counts = count_outcomes(check.get("outcome") for check in checks)
    if checks:
        lines += [", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + ".", ""]

    lines += ["## Target", ""]
    rows = [(_TARGET_LABELS[k], target.get(k)) for k in _TARGET_LABELS]
    rows += [(k, v) for k, v in target.items() if k not in _TARGET_LABELS]
    lines += _table(["setting", "value"], rows)
    lines.append("")

    primary = next((d for d in diagnoses if d.get("primary")), None)
    others = [d for d in diagnoses if d is not primary]
    lines += ["## Diagnosis", ""]
    if primary is None:
        lines += [no_finding_sentence(verdict, counts), ""]
    else:
        _finding(lines, primary, "### Root cause:")
    if others:
        lines += ["### Other findings", ""]
        for finding in others:
            _finding(lines, finding, "####")

    leftovers = [left for left in report.get("leftovers") or [] if isinstance(left, Mapping)]
    if leftovers:
        note = ("Created by this run and not removable by it (later runs reuse these names, so they do not "
                "multiply):")
        lines += ["## Leftovers", "", note, ""]
        lines += _table(["kind", "name", "why", "how to remove"],
                        [(left.get("kind"), left.get("name"), left.get("why"), left.get("remove")) for left in leftovers])
        lines.append("")

    lines += ["## Checks", ""]
    if checks:
        lines += _table(
            ["check", "markers", "outcome", "duration", "diagnosis"],
            [
                (c.get("nodeid"), c.get("markers") or None, c.get("outcome"),
                 f"{float(c.get('duration_s') or 0.0):.2f} s", c.get("diagnosis"))
                for c in checks
            ],
        )
    else:
        lines.append("No check ran.")
    lines.append("")

    lines += ["## Timings", ""]
    series = [(name, value) for name, value in timings.items() if isinstance(value, Mapping)]
    if series:
        lines += _table(
            ["measure", "p50", "p95", "n"],
            [(name, _fmt_number(v.get("p50", 0)) if v.get("n") else None,
              _fmt_number(v.get("p95", 0)) if v.get("n") else None, v.get("n", 0))
             for name, v in series],
        )
        lines.append("")
    scalars = [(name, value) for name, value in timings.items() if not isinstance(value, Mapping)]
    for name, value in scalars:
        label = "Registration (train, log, register, verify)" if name == "registration_s" else name
        unit = " s" if name.endswith("_s") else (" ms" if name.endswith("_ms") else "")
        lines.append(f"- {label}: {_fmt_number(value) + unit if value else 'not measured'}")
    if scalars:
        lines.append("")
    return scrub("\n".join(lines).rstrip() + "\n")


def write_markdown(path: str | os.PathLike[str], text: str) -> Path:
    """Write the Markdown ``text`` to ``path`` atomically (parent directories created, text
    scrubbed of keys once more); return the path."""
    return atomic_write_text(path, text)
