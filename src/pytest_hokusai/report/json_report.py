"""The machine-readable run summary, schema ``pytest-hokusai/1`` (DESIGN.md, "The JSON report").

The schema is a public interface: keys are added, never renamed or removed. Top level:
``schema``, ``verdict``, ``target``, ``diagnoses``, ``checks``, ``timings``, then the keys added
since (:data:`ADDED_KEYS`): ``started_at`` / ``finished_at`` (ISO 8601 UTC), ``duration_s``,
``counts``, ``versions`` and ``budgets``. A timing never measured is ``null``, not 0. ``target`` may carry
extra keys (``versions``, ``sdk_installed``, ``service_id``...) after the five documented ones;
``timings`` carries extra named series after ``auth_validate_ms``, ``proxy_request_ms`` and
``registration_s``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..secret import Secret
from ..settings import HokusaiSettings
from ..state import Finding, RunState
from ._redact import scrub, scrub_obj

__all__ = [
    "ADDED_KEYS",
    "COUNTED_OUTCOMES",
    "SCHEMA",
    "TARGET_KEYS",
    "TOP_LEVEL_KEYS",
    "atomic_write_text",
    "build_json_report",
    "ordered_findings",
    "run_versions",
    "write_json_report",
]

SCHEMA = "pytest-hokusai/1"
#: The documented top-level keys, in order.
TOP_LEVEL_KEYS = ("schema", "verdict", "target", "diagnoses", "checks", "timings")
#: Keys added since (DESIGN.md, "Added since"), after the documented ones; ``budgets`` gives each
#: timing's budget so that readers (the HTML measures table) can judge it without the settings.
ADDED_KEYS = ("started_at", "finished_at", "duration_s", "counts", "versions", "budgets")
#: The outcomes ``counts`` always holds (others, e.g. ``xfailed``, are added when they occur).
COUNTED_OUTCOMES = ("passed", "failed", "skipped", "error")
#: The documented ``target`` keys, in order (extra keys may follow).
TARGET_KEYS = ("mode", "api_url", "auth_url", "tracking_uri", "key")


def _plain(value: Any) -> Any:
    """A JSON-safe form of a target value: a Secret shows only its mask, paths become strings."""
    if isinstance(value, Secret):
        return value.masked
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def ordered_findings(findings: list[Finding]) -> list[Finding]:
    """The findings with exactly one primary, first (when there are any).

    The primary is the first finding marked ``primary``; if the diagnosis marked none, the first
    finding is promoted (the schema promises exactly one). Other findings keep their order and are
    reported with ``primary: false``. The input objects are not modified.
    """
    if not findings:
        return []
    index = next((i for i, f in enumerate(findings) if f.primary), 0)
    head = findings[index]
    rest = findings[:index] + findings[index + 1:]
    out = [Finding(head.code, head.category, head.summary, list(head.evidence), head.remediation, True,
                   accepted=head.accepted)]
    out += [Finding(f.code, f.category, f.summary, list(f.evidence), f.remediation, False, accepted=f.accepted)
            for f in rest]
    return out


def _with_owner(diagnosis: dict[str, Any]) -> dict[str, Any]:
    """A diagnosis with ``owner``: the team that fixes its code (DESIGN.md; diagnosis.catalog)."""
    from ..diagnosis.ownership import owner_of

    diagnosis.setdefault("owner", owner_of(str(diagnosis.get("code"))))
    return diagnosis


def _iso(moment: float) -> str:
    """ISO 8601 UTC with a ``Z``: ``2026-11-30T10:41:03.123Z``."""
    stamp = datetime.fromtimestamp(moment, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def run_versions() -> dict[str, str | None]:
    """Versions that explain a run: the plugin, Python, the MLflow client, the hokusai SDK (``None``
    when not installed). Read from package metadata: nothing heavy is imported."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"plugin": version("pytest-hokusai"), "python": platform.python_version(),
            "mlflow": version("mlflow"), "sdk": version("hokusai-ml-platform")}


def build_json_report(
    state: RunState,
    settings: HokusaiSettings,
    target: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the ``pytest-hokusai/1`` report of a run (pure; every string scrubbed of keys).

    ``target`` supplements and overrides ``state.target`` and the URLs of ``settings``; its
    ``key`` may be a :class:`~pytest_hokusai.secret.Secret` (its mask is used), a masked string or
    ``None`` (no key configured). Raw keys anywhere are masked.
    """
    block: dict[str, Any] = {
        "mode": settings.target,
        "api_url": settings.api_url,
        "auth_url": settings.auth_url,
        "tracking_uri": settings.tracking_uri,
        "key": None,
    }
    for source in (state.target, target or {}):
        for name, value in source.items():
            block[str(name)] = _plain(value)
    if block.get("key") is not None and not isinstance(block["key"], str):
        block["key"] = str(block["key"])

    checks = []
    for check in state.checks.values():
        row = check.to_dict()
        row["duration_s"] = float(row["duration_s"])
        checks.append(row)

    counts = dict.fromkeys(COUNTED_OUTCOMES, 0)
    for row in checks:
        counts[str(row["outcome"])] = counts.get(str(row["outcome"]), 0) + 1
    now = time.time()
    started = state.started_at if state.started_at is not None else now
    finished = state.finished_at if state.finished_at is not None else now
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "verdict": state.verdict,
        "target": block,
        "diagnoses": [_with_owner(f.to_dict()) for f in ordered_findings(list(state.findings))],
        "checks": checks,
        "timings": state.timings_block(),
        "leftovers": [left.to_dict() for left in state.leftovers],
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(max(0.0, finished - started), 3),
        "counts": counts,
        "versions": run_versions(),
        "budgets": {"auth_validate_ms": settings.budget_auth_ms, "proxy_request_ms": settings.budget_proxy_ms,
                    "registration_s": settings.budget_registration_s},
    }
    scrubbed: dict[str, Any] = scrub_obj(report)
    return scrubbed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write scrubbed UTF-8 ``text`` to ``path`` atomically (temp file + :func:`os.replace`),
    creating parent directories; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = scrub(text)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be read (CI artefact)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def write_json_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented UTF-8 JSON to ``path``, atomically, and return the path.

    Parent directories are created. The text is written to a temporary file in the same directory
    and moved into place with :func:`os.replace`, so a reader never sees half a report. The
    serialized text is scrubbed of keys once more before it touches the disk.
    """
    return atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
