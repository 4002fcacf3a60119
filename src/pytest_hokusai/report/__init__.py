"""Report layer: the JSON run summary (schema ``pytest-hokusai/1``), the Markdown summary and the
pytest-html integration (summary block, per-test transcripts, latency chart, redaction).

Only standard-library code is imported here; :mod:`.chart` loads matplotlib inside its functions
and :mod:`.html` is meant to be imported by the plugin only when pytest-html is active.
Every text this package writes goes through :func:`scrub` as a last line of defence.
"""

from __future__ import annotations

from ._redact import KEY_LIKE, scrub, scrub_obj
from .json_report import SCHEMA, build_json_report, write_json_report
from .markdown import render_markdown, write_markdown

__all__ = [
    "KEY_LIKE",
    "SCHEMA",
    "build_json_report",
    "render_markdown",
    "scrub",
    "scrub_obj",
    "write_json_report",
    "write_markdown",
]
