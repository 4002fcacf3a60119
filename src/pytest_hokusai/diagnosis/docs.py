"""Render ``docs/troubleshooting.md`` from the rules table.

``python -m pytest_hokusai.diagnosis.docs`` rewrites the file; ``--check`` only compares and exits
1 when it is stale; ``--stdout`` prints it. The unit test ``test_troubleshooting_doc.py`` fails when
the committed file differs from what this renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .ownership import owner_of
from .rules import PRECEDENCE, RULES

__all__ = ["DOC_PATH", "REGENERATE_COMMAND", "main", "render_troubleshooting"]

#: The committed guide, relative to the repository root (src/pytest_hokusai/diagnosis/docs.py -> ../../..).
DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "troubleshooting.md"
REGENERATE_COMMAND = "python -m pytest_hokusai.diagnosis.docs"

_GENERATED_NOTE = (f"<!-- Generated from pytest_hokusai/diagnosis (catalog.py, rules.py) by `{REGENERATE_COMMAND}`."
                   " Do not edit by hand. -->")
_CATEGORY_ORDER = ("network", "deployment", "configuration", "credentials", "security", "client", "other")


def _anchor(code: str) -> str:
    return code.lower()


def render_troubleshooting() -> str:
    """The whole guide as Markdown (deterministic: same rules, same text)."""
    out: list[str] = [
        "# Troubleshooting: diagnosis codes",
        "",
        _GENERATED_NOTE,
        "",
        "When a live run fails, pytest-hokusai runs a short triage (health of each host, the proxy with and",
        "without a key, direct key validation in both styles, a write, an artifact round trip and a model",
        "create) and reports findings with one of the codes below. Exactly one finding is the **root cause**",
        "(`primary`); the others are its consequences or independent problems. The JSON report",
        "(`--hokusai-report-json`) carries them under `diagnoses`, each with its evidence (redacted request",
        "and answer lines) and what to change.",
        "",
        "The history column refers to the platform's failure catalogue (F1..F30).",
        "",
        "## Which finding is the root cause",
        "",
        "Findings are ranked in triage order; the first one that matches is primary:",
        "",
    ]
    out += [f"{i}. `{code}`" for i, code in enumerate(PRECEDENCE, 1)]
    out += [
        "",
        "`UNEXPECTED_RESPONSE` is reported only when no functional rule matches. `LATENCY_BUDGET_EXCEEDED`",
        "(a performance check missed its budget or regressed beyond the baseline) ranks last: a functional",
        "failure stays the root cause, and it is primary only when the only failures are performance.",
    ]
    out += ["", "## Codes by category", "", "| category | code | title | history |", "| --- | --- | --- | --- |"]
    ordered = sorted(RULES.values(), key=lambda r: (_CATEGORY_ORDER.index(r.category), list(RULES).index(r.code)))
    for rule in ordered:
        out.append(f"| {rule.category} | [`{rule.code}`](#{_anchor(rule.code)}) | {rule.title} | {rule.history} |")
    for rule in ordered:
        out += [
            "",
            f"## {rule.code}",
            "",
            f"**{rule.title}.** Category: {rule.category}. Owner: {owner_of(rule.code)}. History: {rule.history}.",
            "",
            f"- **Symptom:** {rule.symptom}",
            f"- **Likely cause:** {rule.cause}",
            f"- **How to fix:** {rule.fix}",
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite (default), ``--check`` or ``--stdout``; ``--path`` to write elsewhere."""
    parser = argparse.ArgumentParser(prog=REGENERATE_COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", type=Path, default=DOC_PATH, help=f"file to write (default {DOC_PATH})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the file is stale, write nothing")
    group.add_argument("--stdout", action="store_true", help="print the guide instead of writing it")
    args = parser.parse_args(argv)
    text = render_troubleshooting()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    path: Path = args.path
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if args.check:
        if current != text:
            print(f"{path} is stale; regenerate it with: {REGENERATE_COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
