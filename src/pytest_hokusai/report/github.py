"""GitHub Actions hand-off: the Markdown summary on the job page and one annotation per finding.

* :func:`append_step_summary` appends the run's Markdown summary to the file ``GITHUB_STEP_SUMMARY``
  names (GitHub renders it on the job's summary page);
* :func:`annotations` gives one workflow command per finding: ``::error title=CODE::summary`` for a
  finding that fails the verdict, ``::warning`` for one accepted as a known issue, escaped as GitHub's
  workflow-command rules require (data: ``%``, CR, LF; properties also ``:`` and ``,``).

Pure functions and one file append; every text is scrubbed of keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._redact import scrub

__all__ = ["append_step_summary", "escape_data", "escape_property", "workflow_commands"]


def escape_data(text: str) -> str:
    """Escape a workflow command's message (``%``, ``\\r``, ``\\n``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (as :func:`escape_data`, plus ``:`` and ``,``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_commands(report: Mapping[str, Any], accepted: Iterable[str] = ()) -> list[str]:
    """One ``::error`` (or, for an accepted finding, ``::warning``) line per diagnosis, primary first."""
    known = set(accepted)
    lines = []
    diagnoses = sorted((d for d in report.get("diagnoses") or [] if isinstance(d, Mapping)),
                       key=lambda d: not d.get("primary"))
    for finding in diagnoses:
        code = str(finding.get("code") or "UNEXPECTED_RESPONSE")
        is_known = bool(finding.get("accepted")) or code in known
        level = "warning" if is_known else "error"
        summary = " ".join(str(finding.get("summary") or "").split())
        owner = finding.get("owner")
        message = f"{summary} (owner: {owner})" if owner else summary
        if is_known:
            message = f"known issue, accepted: {message}"
        lines.append(scrub(f"::{level} title={escape_property(code)}::{escape_data(message)}"))
    return lines


def append_step_summary(path: str | os.PathLike[str], markdown: str) -> Path:
    """Append ``markdown`` (scrubbed) to the step summary file, separated from what is already there."""
    target = Path(path)
    with target.open("a", encoding="utf-8") as handle:
        handle.write(scrub(markdown).rstrip("\n") + "\n\n")
    return target
