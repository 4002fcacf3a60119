"""What of an HTTP exchange is kept as evidence, and how: redaction (:func:`scrub`), the recorded
headers, the body excerpt, an HTML page's title, the URL as sent, and the JSON reading of a body.

Split from http.py (the session): this is the capture side, the session decides when to capture.
This module imports only requests (never mlflow, sklearn, pandas or fastapi).
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.models import PreparedRequest

from .evidence import Exchange, clean_url, excerpt
from .secret import mask, redact

__all__ = [
    "EXCERPT_BYTES",
    "PROBE_MAX_BODY",
    "RECORDED_HEADERS",
    "TITLE_SEARCH_BYTES",
    "Attempt",
    "ProbeResult",
    "exchange_for",
    "html_title",
    "ms_since",
    "parse_json_safely",
    "read_bounded",
    "recorded_url",
    "scrub",
]

#: Response headers copied into the evidence.
RECORDED_HEADERS = ("retry-after", "www-authenticate", "server", "content-type", "x-request-id", "location")
#: Bytes of a body kept for the excerpt (and read at most by :meth:`HokusaiSession.probe`).
EXCERPT_BYTES = 4096
PROBE_MAX_BODY = 256 * 1024

_KEY_LIKE = re.compile(r"\bhk_(?:live|test|dev)_[A-Za-z0-9]{6,}")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api_key|apikey|key|token|access_token|password)=)[^&\s#'\")]*")


def scrub(text: str) -> str:
    """Redact every key the process knows, anything key-shaped, and secret query values in text."""
    if not text:
        return text
    text = redact(text)
    text = _KEY_LIKE.sub(lambda m: mask(m.group(0)), text)
    return _SECRET_QUERY.sub(r"\1***", text)


# -- results ----------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """What :meth:`HokusaiSession.probe` saw: the recorded exchange, the response (``None`` when no
    status came back) and its JSON body (``None`` when it was not JSON; ``json_problem`` says why)."""

    exchange: Exchange
    response: requests.Response | None
    json: Any = None
    json_problem: str | None = None

    @property
    def status(self) -> int | None:
        return self.exchange.status

    @property
    def ok(self) -> bool:
        return self.exchange.ok

    @property
    def error(self) -> str | None:
        return self.exchange.error

    def detail(self) -> str | None:
        """The ``detail`` field of a JSON object body, as text (FastAPI's error convention)."""
        if isinstance(self.json, dict) and "detail" in self.json:
            value = self.json["detail"]
            return value if isinstance(value, str) else scrub(jsonlib.dumps(value, default=str))
        return None


def parse_json_safely(response: requests.Response) -> tuple[Any, str | None]:
    """Parse a response body as JSON; return ``(obj, None)`` or ``(None, problem)``.

    The problem is a sentence for a report, e.g. ``expected JSON from GET https://… but got
    text/html (502 from a load balancer or proxy?): <html>…``.
    """
    request = response.request
    method = (request.method if request is not None else None) or "GET"
    url = clean_url(response.url or (request.url if request is not None and request.url else "") or "")
    ctype = response.headers.get("content-type", "")
    body = response.content or b""
    where = f"{method} {url}"
    if not body.strip():
        return None, f"expected JSON from {where} but the body was empty ({response.status_code})"
    try:
        return jsonlib.loads(body), None
    except ValueError:
        pass
    shown = excerpt(body[:EXCERPT_BYTES])
    if "html" in ctype.lower() or body.lstrip()[:1] == b"<":
        kind = ctype.split(";")[0] or "an HTML page"
        hint = " from a load balancer or proxy?" if response.status_code >= 400 else ": a web page, not the API?"
        return None, f"expected JSON from {where} but got {kind} ({response.status_code}{hint}): {shown}"
    if "json" in ctype.lower():
        return None, f"{where} sent invalid JSON ({response.status_code}, {ctype}): {shown}"
    kind = ctype.split(";")[0] or "a body without a content type"
    return None, f"expected JSON from {where} but got {kind} ({response.status_code}): {shown}"


@dataclass
class Attempt:
    """One request as the session sent it, and what came back (a response or an error)."""

    method: str
    url: str
    auth: str
    label: str | None
    started: float = 0.0
    started_wall: float = 0.0
    response: requests.Response | None = None
    error: Exception | None = None
    exchange: Exchange | None = None
    read_error: tuple[str, str] | None = None
    request_body: str | None = None

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()



def exchange_for(attempt: Attempt, *, with_body: bool) -> Exchange:
    """The evidence of an attempt that got a status: redacted headers, redirects, retries, excerpt."""
    response = attempt.response
    assert response is not None
    headers = {name: scrub(response.headers[name]) for name in RECORDED_HEADERS if name in response.headers}
    if response.history:
        hops = [f"{r.status_code} {clean_url(r.url)}" for r in response.history]
        headers["redirects"] = scrub(" -> ".join([*hops, f"{response.status_code} {clean_url(response.url)}"]))
    retries = getattr(getattr(response.raw, "retries", None), "history", ())
    if retries:
        headers["attempts"] = str(len(retries) + 1)
    body = ""
    if with_body:
        body = scrub(excerpt(response.content[:EXCERPT_BYTES] if response.content else b""))
        title = html_title(response.content or b"", response.headers.get("content-type"))
        if title:  # what a wrong URL turned out to be (NOT_HOKUSAI_API), even past the excerpt
            headers["html-title"] = scrub(title)
    error, detail = attempt.read_error if attempt.read_error else (None, None)
    return Exchange(
        method=attempt.method, url=attempt.url, status=response.status_code,
        content_type=response.headers.get("content-type"), body_excerpt=body,
        elapsed_ms=ms_since(attempt.started), error=error, error_detail=detail, auth=attempt.auth,
        label=attempt.label, headers=headers, started_at=attempt.started_wall,
        request_body=attempt.request_body)



_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
#: How far into an HTML body the ``<title>`` is looked for.
TITLE_SEARCH_BYTES = 64 * 1024


def html_title(body: bytes, content_type: str | None = None) -> str | None:
    """The ``<title>`` of an HTML body (whitespace collapsed, at most 120 characters), else ``None``.

    >>> html_title(b"<html><head><title> Example  Domain </title></head></html>", "text/html")
    'Example Domain'
    """
    head = body[:TITLE_SEARCH_BYTES]
    if "html" not in (content_type or "").lower() and head.lstrip()[:1] != b"<":
        return None
    match = _TITLE.search(head)
    if match is None:
        return None
    title = " ".join(match.group(1).decode("utf-8", errors="replace").split())
    return (title if len(title) <= 120 else title[:119] + "\u2026") or None


def ms_since(started: float) -> float:
    """Milliseconds since ``started`` (monotonic), rounded for the evidence."""
    return round((time.monotonic() - started) * 1000.0, 2)


def recorded_url(url: str, params: Any) -> str:
    """The URL as sent (params included), with secret query values and keys removed."""
    full = url
    if params:
        try:
            prepared = PreparedRequest()
            prepared.prepare_url(url, params)
            full = prepared.url or url
        except (ValueError, TypeError, requests.RequestException):
            full = url
    return scrub(clean_url(full))


def read_bounded(response: requests.Response, max_body: int, *, deadline: float) -> tuple[bytes, bool]:
    """Read at most ``max_body`` bytes of a streamed body, stopping at ``deadline`` (monotonic)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=8192):
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_body or time.monotonic() > deadline:
            return b"".join(chunks)[:max_body], True
    return b"".join(chunks), False
