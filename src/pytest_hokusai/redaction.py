"""Last line of defence: scrub every known API key from log records and test reports.

The package never formats a raw key on purpose, but third-party frames can hold one (a
``headers`` dict inside requests shown by ``--showlocals``, a URL with ``?api_key=``, a log line
from a library). Two mechanisms cover what pytest shows and writes:

* a log-record factory that redacts each record's message (and pre-formats exception text), so
  live logs, captured logs and any handler see the masked form;
* :func:`scrub_report`, applied to every test and collection report before terminal, JUnit and
  HTML reporters read it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from .secret import redact

__all__ = ["install_log_redaction", "scrub_report", "uninstall_log_redaction"]

_original_factory: Any = None


def install_log_redaction() -> None:
    """Wrap the logging record factory so every record's text is redacted. Idempotent."""
    global _original_factory
    if _original_factory is not None:
        return
    base = logging.getLogRecordFactory()
    _original_factory = base

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken %-format is the caller's bug; leave the record alone
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
        return record

    logging.setLogRecordFactory(factory)


def uninstall_log_redaction() -> None:
    global _original_factory
    if _original_factory is not None:
        logging.setLogRecordFactory(_original_factory)
        _original_factory = None


def _redact_in_place(obj: Any, seen: set[int], depth: int = 0) -> Any:
    """Redact every string inside pytest's repr objects (mutable dataclasses), keeping their structure."""
    if isinstance(obj, str):
        return redact(obj)
    if depth > 12 or id(obj) in seen or obj is None or isinstance(obj, (int, float, bool, bytes)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, list):
        obj[:] = [_redact_in_place(v, seen, depth + 1) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_redact_in_place(v, seen, depth + 1) for v in obj)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _redact_in_place(obj[k], seen, depth + 1)
        return obj
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        for name, value in list(attrs.items()):
            try:
                setattr(obj, name, _redact_in_place(value, seen, depth + 1))
            except (AttributeError, TypeError):  # frozen or read-only: the text fallback covers it
                pass
    return obj


def _redact_longrepr(longrepr: Any) -> Any:
    if longrepr is None:
        return None
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, lineno, reason)
        path, lineno, reason = longrepr
        return (path, lineno, redact(str(reason)))
    if isinstance(longrepr, str):
        return redact(longrepr)
    text = str(longrepr)
    if redact(text) == text:
        return longrepr  # keep the structured repr (colours, reprcrash for JUnit messages)
    # Redact inside the structure so the crash message (-r lines, JUnit message) survives;
    # fall back to plain text only if something is still left.
    _redact_in_place(longrepr, set())
    text = str(longrepr)
    clean = redact(text)
    return longrepr if clean == text else clean


def scrub_report(report: Any) -> None:
    """Redact every known key from a TestReport or CollectReport, in place."""
    report.longrepr = _redact_longrepr(getattr(report, "longrepr", None))
    if isinstance(getattr(report, "wasxfail", None), str):  # xfail reason: -v line, -r summary, JUnit
        report.wasxfail = redact(report.wasxfail)
    sections = getattr(report, "sections", None)
    if sections:
        report.sections = [(redact(title), redact(content)) for title, content in sections]
    props = getattr(report, "user_properties", None)
    if props:
        report.user_properties = [(name, redact(v) if isinstance(v, str) else v) for name, v in props]
