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
    "drops_body",
    "failed",
    "foreign_answer",
    "html_title",
    "is_artifact",
    "is_html",
    "is_json",
    "is_mlflow_search",
    "no_answer",
    "ok",
    "path_of",
    "retry_after",
    "service_id_of",
    "status",
    "what_answered",
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


# -- is it the Hokusai API / MLflow at all? (AUTH_BYPASS vs NOT_HOKUSAI_API) --------------------
_TITLE_IN_TEXT = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
#: The fields of MLflow's experiments/search answer (protobuf JSON omits empty ones, so ``{}`` is MLflow too).
_SEARCH_FIELDS = frozenset({"experiments", "next_page_token"})
_MLFLOW_SEARCH_START = re.compile(r'^\{\s*"(experiments|next_page_token)"\s*:')


def html_title(ex: Exchange | None) -> str | None:
    """The HTML ``<title>`` of the answer: recorded at capture time (``html-title``), else from the excerpt."""
    if ex is None:
        return None
    recorded = ex.headers.get("html-title")
    if recorded:
        return recorded
    if not is_html(ex):
        return None
    match = _TITLE_IN_TEXT.search(ex.body_excerpt)
    return " ".join(match.group(1).split()) or None if match else None


def is_mlflow_search(ex: Exchange | None) -> bool:
    """Whether a 2xx answer to ``experiments/search`` is MLflow's JSON: an object whose keys are MLflow's
    (``experiments``, ``next_page_token``), possibly cut short in the excerpt, or ``{}``."""
    if ex is None or not ex.ok or is_html(ex):
        return False
    data = json_body(ex)
    if isinstance(data, dict):
        return set(data) <= _SEARCH_FIELDS and all(
            isinstance(e, dict) and "experiment_id" in e for e in data.get("experiments") or [])
    return data is None and bool(_MLFLOW_SEARCH_START.match(ex.body_excerpt.strip()))


def what_answered(ex: Exchange) -> str:
    """``200 text/html, title 'Example Domain'`` / ``200 application/json {"status": ...}``: what a URL
    turned out to be, in a few words (status, content type, HTML title or a body excerpt)."""
    ctype = (ex.content_type or "no content type").split(";")[0].strip()
    title = html_title(ex)
    if title:
        return f"{ex.status} {ctype}, title {title!r}"
    if is_html(ex):
        return f"{ex.status} {ctype} (an HTML page without a title)"
    text = " ".join(ex.body_excerpt.split())
    shown = text if len(text) <= 80 else text[:79] + "\u2026"
    return f"{ex.status} {ctype} {shown!r}" if shown else f"{ex.status} {ctype}, empty body"


def foreign_answer(ex: Exchange | None, *, expect: str) -> bool:
    """Whether the answer is not what the Hokusai API (``expect="api-health"``, ``"auth"``) or the MLflow
    proxy (``expect="mlflow-search"``) ever answers: a 2xx that is HTML, not JSON, or JSON of another
    shape; or a login wall (401/403 HTML). Errors of the platform's own kinds (5xx, plain 404) are not."""
    if ex is None or ex.status is None:
        return False
    if ex.status in (401, 403):
        return is_html(ex)  # the platform's 401/403 are JSON (or MLflow's text/plain 403): a login wall
    if not ex.ok:
        return False
    if expect == "mlflow-search":
        return not is_mlflow_search(ex)
    data = json_body(ex)
    if is_html(ex) or not (isinstance(data, dict) or (is_json(ex) and ex.body_excerpt.lstrip()[:1] == "{")):
        return True
    if expect == "api-health" and isinstance(data, dict):
        return "status" not in data
    return False


#: MLflow's answer when a parameter it requires is not in the request (mlflow.utils.validation.missing_value).
MISSING_PARAMETER = "Missing value for required parameter"


def drops_body(ex: Exchange | None) -> bool:
    """A DELETE answered 400 'Missing value for required parameter ...': the body did not reach MLflow."""
    return ex is not None and ex.method == "DELETE" and ex.status == 400 and body_has(ex, MISSING_PARAMETER)
