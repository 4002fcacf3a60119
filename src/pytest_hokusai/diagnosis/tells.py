"""Small readers of recorded exchanges that the rules share: statuses, bodies, details, paths.

Every function takes an :class:`~pytest_hokusai.evidence.Exchange` (or ``None``) and never raises.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ..evidence import Exchange
from .evidence import json_body

__all__ = [
    "AUTH_SERVICE_PREFIX",
    "INVALID_KEY",
    "KEY_REQUIRED",
    "NO_ANSWER",
    "body_has",
    "current_scopes",
    "detail",
    "failed",
    "is_artifact",
    "is_html",
    "is_json",
    "no_answer",
    "ok",
    "path_of",
    "retry_after",
    "service_id_of",
    "status",
]

#: The middleware's 401 when it found no key (contract 2.4).
KEY_REQUIRED = "API key required"
#: The middleware's 401 when the auth service said 401.
INVALID_KEY = "Invalid or expired API key"
#: The middleware's 503 (401 before 2026-06-04) when the auth call failed: error / timeout / unavailable.
AUTH_SERVICE_PREFIX = "Authentication service"
#: Failure classes meaning "nothing answered" (HOST_UNREACHABLE).
NO_ANSWER = ("dns", "refused", "timeout", "connection")


def ok(ex: Exchange | None) -> bool:
    return ex is not None and ex.ok


def status(ex: Exchange | None) -> int | None:
    return ex.status if ex is not None else None


def failed(ex: Exchange | None) -> bool:
    """Sent, and answered with something other than 2xx (or not answered at all)."""
    return ex is not None and not ex.ok


def no_answer(ex: Exchange | None) -> bool:
    return ex is not None and ex.status is None and ex.error in NO_ANSWER


def is_json(ex: Exchange | None) -> bool:
    if ex is None:
        return False
    if ex.is_json:
        return True
    return json_body(ex) is not None


def is_html(ex: Exchange | None) -> bool:
    if ex is None:
        return False
    ctype = (ex.content_type or "").lower()
    return "html" in ctype or ex.body_excerpt.lstrip()[:1] == "<"


def body_has(ex: Exchange | None, *needles: str) -> bool:
    """Case-insensitive: does the body excerpt contain any of the needles?"""
    if ex is None or not ex.body_excerpt:
        return False
    text = ex.body_excerpt.lower()
    return any(n.lower() in text for n in needles)


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        # FastAPI 422: [{"loc": ["body", "api_key"], "msg": "Field required", ...}]
        parts = []
        for item in value:
            loc = ".".join(str(p) for p in item.get("loc") or [])
            parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
        return "; ".join(parts)
    if isinstance(value, dict):
        for name in ("message", "detail", "error", "reason"):
            if isinstance(value.get(name), str):
                return str(value[name])
    return str(value)


def detail(ex: Exchange | None, limit: int = 160) -> str:
    """The error text of an answer: JSON ``detail`` / ``message`` / ``error``, else the body excerpt."""
    if ex is None:
        return ""
    if ex.status is None:
        return f"{ex.error or 'error'}: {ex.error_detail or ''}".rstrip(": ")
    data = json_body(ex)
    text = ""
    if isinstance(data, dict):
        for name in ("detail", "message", "error", "error_code"):
            if data.get(name):
                text = _text_of(data[name])
                break
    if not text:
        text = ex.body_excerpt
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def path_of(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


def is_artifact(ex: Exchange) -> bool:
    return "/mlflow-artifacts/" in ex.url


def retry_after(ex: Exchange | None) -> str | None:
    if ex is None:
        return None
    for name, value in ex.headers.items():
        if name.lower() == "retry-after" and value:
            return value
    return None


_SERVICE_ID_IN_TEXT = re.compile(r'"service_id"\s*:\s*"([^"]+)"')


def service_id_of(ex: Exchange | None) -> str | None:
    """The ``service_id`` of a (possibly cut-short) JSON validation result."""
    data = json_body(ex)
    if isinstance(data, dict) and isinstance(data.get("service_id"), str):
        return str(data["service_id"])
    match = _SERVICE_ID_IN_TEXT.search(ex.body_excerpt) if ex is not None else None
    return match.group(1) if match else None


_SCOPES_IN_TEXT = re.compile(r"scopes?:?\s*(\[[^\]]*\])", re.IGNORECASE)


def current_scopes(ex: Exchange | None) -> str | None:
    """The key's scopes named by a 403 FORBIDDEN body (``current_scopes`` or its message)."""
    data = json_body(ex)
    if isinstance(data, dict) and isinstance(data.get("current_scopes"), list):
        return "[" + ", ".join(str(s) for s in data["current_scopes"]) + "]"
    if ex is not None:
        match = _SCOPES_IN_TEXT.search(ex.body_excerpt)
        if match:
            return match.group(1).replace("'", "").replace('"', "")
    return None
