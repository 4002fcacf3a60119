"""The plugin's HTTP client: a :class:`requests.Session` that presents the Hokusai key, never waits
forever, retries only what is safe to retry, and records every exchange as redacted evidence.

* The key is applied per request, at one place (:meth:`HokusaiSession._present_key`), in the style
  asked for: ``Authorization: Bearer`` (default), ``Authorization: ApiKey``, ``X-API-Key``, the
  ``api_key`` query parameter, the ``api_key`` JSON body field (the auth service's spec style), or
  not at all. What shows anywhere is the masked presentation, e.g. ``Bearer hk_live_…wxyz``.
* Every request without an explicit timeout gets the session's.
* GET, HEAD and OPTIONS are retried (at most twice, short backoff) on connection failures and on
  502/503/504; a ``Retry-After`` is honoured but capped at a few seconds, so a 503 never hangs a run.
  POST, PUT, PATCH and DELETE are sent once.
* Every exchange (an answer of any status, or an exception before any status) becomes an
  :class:`~pytest_hokusai.evidence.Exchange` in the session's :class:`~pytest_hokusai.evidence.Recorder`.
  :meth:`HokusaiSession.request` re-raises network errors after recording them;
  :meth:`HokusaiSession.probe` never raises for them and returns what was seen.

This module imports only requests and urllib3 (never mlflow, sklearn, pandas or fastapi).
"""

from __future__ import annotations

import errno
import http.client
import json as jsonlib
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import requests
import urllib3.exceptions as u3exc
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.util.retry import Retry

from .evidence import Exchange, Recorder, clean_url, excerpt, request_body_shape
from .reachability import HostReachability, cap_timeout
from .secret import KEY_PREFIXES, Secret, mask, redact

__all__ = [
    "AUTH_STYLES",
    "IDEMPOTENT_METHODS",
    "RECORDED_HEADERS",
    "AuthStyle",
    "CappedRetry",
    "HokusaiSession",
    "ProbeResult",
    "classify_error",
    "html_title",
    "parse_json_safely",
    "scrub",
]

AuthStyle = Literal["bearer", "apikey", "x-api-key", "query", "body", "none"]
#: Ways the key can be presented (contract section 3; ``body`` is the auth service's spec style).
AUTH_STYLES: tuple[str, ...] = ("bearer", "apikey", "x-api-key", "query", "body", "none")
#: Methods retried on connection failures and 502/503/504. Everything else is sent exactly once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
#: Response headers copied into the evidence.
RECORDED_HEADERS = ("retry-after", "www-authenticate", "server", "content-type", "x-request-id", "location")
#: Bytes of a body kept for the excerpt (and read at most by :meth:`HokusaiSession.probe`).
EXCERPT_BYTES = 4096
PROBE_MAX_BODY = 256 * 1024

_UNSET: Any = object()
_KEY_LIKE = re.compile(r"\bhk_(?:live|test|dev)_[A-Za-z0-9]{6,}")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api_key|apikey|key|token|access_token|password)=)[^&\s#'\")]*")


def scrub(text: str) -> str:
    """Redact every key the process knows, anything key-shaped, and secret query values in text."""
    if not text:
        return text
    text = redact(text)
    text = _KEY_LIKE.sub(lambda m: mask(m.group(0)), text)
    return _SECRET_QUERY.sub(r"\1***", text)


# -- error classification ---------------------------------------------------------------------
def _chain(exc: BaseException, limit: int = 24) -> list[BaseException]:
    """The exception and everything it wraps (reason, cause, context, exception args), outer first."""
    out: list[BaseException] = []
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue and len(out) < limit:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked.extend(a for a in current.args if isinstance(a, BaseException))
        queue.extend(x for x in linked if isinstance(x, BaseException))
    return out


_DNS_WORDS = ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
              "failed to resolve", "getaddrinfo failed", "no address associated with hostname",
              "name resolution")


def _is_invalid_url(e: BaseException) -> bool:
    return isinstance(e, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                          requests.exceptions.InvalidSchema, requests.exceptions.URLRequired,
                          u3exc.LocationValueError))


def _is_tls(e: BaseException) -> bool:
    return isinstance(e, (requests.exceptions.SSLError, u3exc.SSLError, ssl.SSLError, ssl.CertificateError))


def _is_dns(e: BaseException) -> bool:
    if isinstance(e, (socket.gaierror, getattr(u3exc, "NameResolutionError", socket.gaierror))):
        return True
    return isinstance(e, OSError) and any(w in str(e).lower() for w in _DNS_WORDS)


def _is_refused(e: BaseException) -> bool:
    if isinstance(e, ConnectionRefusedError):
        return True
    if isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, 10061):
        return True
    return isinstance(e, u3exc.NewConnectionError) and "refused" in str(e).lower()


def _is_timeout(e: BaseException) -> bool:
    if isinstance(e, u3exc.NewConnectionError):  # a subclass of ConnectTimeoutError, sadly
        return False
    return isinstance(e, (requests.exceptions.Timeout, u3exc.TimeoutError, socket.timeout, TimeoutError))


def _is_connection(e: BaseException) -> bool:
    return isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                          u3exc.ProtocolError, u3exc.NewConnectionError, u3exc.MaxRetryError,
                          ConnectionError, http.client.HTTPException))


_CLASSIFIERS = (("invalid-url", _is_invalid_url), ("tls", _is_tls), ("dns", _is_dns),
                ("refused", _is_refused), ("timeout", _is_timeout), ("connection", _is_connection))


def _describe(e: BaseException) -> str:
    text = str(e)
    # urllib3 wraps the useful part: "...: Failed to establish a new connection: [Errno 111] ..."
    for marker in ("Failed to establish a new connection: ", "Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = " ".join(text.split()).strip(" ()'\"")
    name = type(e).__name__
    text = f"{name}: {text}" if text else name
    return scrub(text if len(text) <= 240 else text[:239] + "\u2026")


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Map a requests/urllib3/socket exception to one of ``evidence.ERROR_CLASSES`` and a short,
    redacted detail: ``dns``, ``refused``, ``tls``, ``timeout``, ``connection``, ``invalid-url``
    or ``other``.

    The whole chain of wrapped exceptions is searched (``MaxRetryError.reason``, ``__cause__``,
    ``__context__``), so an ``MlflowException`` raised from a ``requests`` error is classified by
    its cause. The detail names the innermost matching exception.
    """
    chain = _chain(exc)
    for name, test in _CLASSIFIERS:
        matches = [e for e in chain if test(e)]
        if matches:
            return name, _describe(matches[-1])
    return "other", _describe(exc)


# -- retries ----------------------------------------------------------------------------------
class CappedRetry(Retry):
    """A urllib3 :class:`Retry` whose ``Retry-After`` waits are capped (``retry_after_cap`` s), and
    which retries 429/413 only if they are in ``status_forcelist`` (they are not, by default)."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def __init__(self, *args: Any, retry_after_cap: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap

    def new(self, **kw: Any) -> CappedRetry:
        retry = super().new(**kw)
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def get_retry_after(self, response: Any) -> float | None:
        try:
            value = super().get_retry_after(response)
        except Exception:  # noqa: BLE001  # an unparseable Retry-After: fall back to the backoff
            return None
        return None if value is None else min(value, self.retry_after_cap)


def _make_retry(retries: int, backoff: float, retry_after_cap: float) -> CappedRetry:
    return CappedRetry(
        total=retries, connect=retries, read=0, status=retries, other=0, redirect=5,
        allowed_methods=IDEMPOTENT_METHODS, status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff, backoff_max=max(backoff * 4, 0.5), raise_on_status=False,
        raise_on_redirect=False, respect_retry_after_header=True, retry_after_cap=retry_after_cap,
    )


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


# -- the session ------------------------------------------------------------------------------
class HokusaiSession(requests.Session):
    """A requests session for the Hokusai platform: key presentation, default timeout, safe retries
    and evidence recording (see the module docstring).

    Per request, ``key=`` (another :class:`Secret`, or ``None`` for no key), ``auth_style=`` and
    ``label=`` override the session's defaults. A request given its own ``Authorization`` or
    ``X-API-Key`` header is sent as is, without the session's key (recorded masked)::

        session = HokusaiSession(timeout=10, recorder=recorder, key=key)
        session.get(api + "/health", key=None, label="probe:api-health")
        result = session.probe("GET", url, key=key, style="x-api-key", label="probe:x-api-key")
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        recorder: Recorder | None = None,
        key: Secret | None = None,
        auth_style: AuthStyle = "bearer",
        retries: int = 2,
        backoff: float = 0.2,
        retry_after_cap: float = 2.0,
        user_agent: str | None = None,
        reachability: HostReachability | None = None,
    ) -> None:
        super().__init__()
        if auth_style not in AUTH_STYLES:
            raise ValueError(f"auth_style must be one of {', '.join(AUTH_STYLES)}, not {auth_style!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.recorder = recorder
        self.key = key
        self.auth_style: AuthStyle = auth_style
        self.retry_policy = _make_retry(retries, backoff, retry_after_cap)
        #: the run's connect/first-byte budget for hosts that have not answered yet (None: no budget)
        self.reachability = reachability
        self._local = threading.local()
        self._no_retry_adapter = HTTPAdapter(max_retries=_make_retry(0, 0.0, 0.0))
        for prefix in ("http://", "https://"):
            self.mount(prefix, HTTPAdapter(max_retries=self.retry_policy))
        from . import __version__

        self.headers["User-Agent"] = user_agent or f"pytest-hokusai/{__version__} {self.headers['User-Agent']}"

    @classmethod
    def from_settings(cls, settings: Any, *, recorder: Recorder | None = None,
                      key: Secret | None = None, **kwargs: Any) -> HokusaiSession:
        """A session with ``settings.timeout`` (a :class:`~pytest_hokusai.settings.HokusaiSettings`)."""
        return cls(timeout=settings.timeout, recorder=recorder, key=key, **kwargs)

    # -- adapters: probes may ask for no retries ----------------------------------------------
    def get_adapter(self, url: str) -> Any:
        if getattr(self._local, "no_retry", False) and url.lower().startswith(("http://", "https://")):
            return self._no_retry_adapter
        return super().get_adapter(url)

    def close(self) -> None:
        self._no_retry_adapter.close()
        super().close()

    def send(self, request: PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send with the session's timeout when none was given (also for redirects and direct sends)."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)

    # -- the single place where the key is revealed ------------------------------------------
    @staticmethod
    def _present_key(key: Secret | None, style: str, kwargs: dict[str, Any]) -> str:
        """Put ``key`` on the request in ``style``; return the masked presentation."""
        if key is None or not key or style == "none":
            return "none"
        if style == "bearer":
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Bearer {key.reveal()}"}
            return f"Bearer {key.masked}"
        if style == "apikey":
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"ApiKey {key.reveal()}"}
            return f"ApiKey {key.masked}"
        if style == "x-api-key":
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-API-Key": key.reveal()}
            return f"X-API-Key {key.masked}"
        if style == "query":
            params = kwargs.get("params")
            items = list(params.items()) if isinstance(params, dict) else list(params or [])
            kwargs["params"] = [*items, ("api_key", key.reveal())]
            return f"query api_key={key.masked}"
        if style == "body":
            body = kwargs.get("json")
            if body is not None and not isinstance(body, dict):
                raise TypeError("auth_style='body' needs json= to be a dict (or None)")
            kwargs["json"] = {"api_key": key.reveal(), **(body or {})}
            return f"body api_key={key.masked}"
        raise ValueError(f"auth_style must be one of {', '.join(AUTH_STYLES)}, not {style!r}")

    @staticmethod
    def _explicit_auth(headers: Any) -> str | None:
        """A caller-supplied Authorization / X-API-Key header (edge checks), masked; else None."""
        lowered = {str(k).lower(): v for k, v in dict(headers or {}).items()}
        for name in ("authorization", "x-api-key"):
            value = lowered.get(name)
            if value:
                shown = scrub(str(value))
                if shown == str(value) and len(shown) > 12 and not shown.startswith(KEY_PREFIXES):
                    scheme, _, rest = shown.partition(" ")
                    shown = f"{scheme} {mask(rest)}" if rest else mask(shown)
                return shown if name == "authorization" else f"X-API-Key {shown}"
        return None

    # -- requests -----------------------------------------------------------------------------
    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        *args: Any,
        key: Secret | None = _UNSET,
        auth_style: str | None = None,
        label: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request and record it; return the response or re-raise the network error."""
        if args:  # requests' positional order after url
            kwargs.update(zip(_POSITIONAL, args))
        attempt = self._perform(method, url, key, auth_style, label, kwargs)
        if attempt.error is not None:
            raise attempt.error
        assert attempt.response is not None
        self._record(self._exchange_for(attempt, with_body=not kwargs.get("stream")))
        return attempt.response

    # Typed verbs, so ``session.get(url, key=None, label=...)`` type-checks (requests' own
    # signatures do not know the per-request overrides).
    def get(self, url: str | bytes, params: Any = None, *, key: Secret | None = _UNSET,
            auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """GET (follows redirects); see :meth:`request` for ``key``, ``auth_style`` and ``label``."""
        kwargs.setdefault("allow_redirects", True)
        return self.request("GET", url, params=params, key=key, auth_style=auth_style, label=label, **kwargs)

    def options(self, url: str | bytes, *, key: Secret | None = _UNSET,
                auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """OPTIONS (follows redirects)."""
        kwargs.setdefault("allow_redirects", True)
        return self.request("OPTIONS", url, key=key, auth_style=auth_style, label=label, **kwargs)

    def head(self, url: str | bytes, *, key: Secret | None = _UNSET,
             auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """HEAD (does not follow redirects, as in requests)."""
        kwargs.setdefault("allow_redirects", False)
        return self.request("HEAD", url, key=key, auth_style=auth_style, label=label, **kwargs)

    def post(self, url: str | bytes, data: Any = None, json: Any = None, *,
             key: Secret | None = _UNSET, auth_style: str | None = None, label: str | None = None,
             **kwargs: Any) -> requests.Response:
        """POST (sent once, never retried)."""
        return self.request("POST", url, data=data, json=json, key=key, auth_style=auth_style, label=label,
                            **kwargs)

    def put(self, url: str | bytes, data: Any = None, *, key: Secret | None = _UNSET,
            auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """PUT (sent once, never retried)."""
        return self.request("PUT", url, data=data, key=key, auth_style=auth_style, label=label, **kwargs)

    def patch(self, url: str | bytes, data: Any = None, *, key: Secret | None = _UNSET,
              auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """PATCH (sent once, never retried)."""
        return self.request("PATCH", url, data=data, key=key, auth_style=auth_style, label=label, **kwargs)

    def delete(self, url: str | bytes, *, key: Secret | None = _UNSET,
               auth_style: str | None = None, label: str | None = None, **kwargs: Any) -> requests.Response:
        """DELETE (sent once, never retried)."""
        return self.request("DELETE", url, key=key, auth_style=auth_style, label=label, **kwargs)

    def probe(
        self,
        method: str,
        url: str,
        *,
        label: str | None = None,
        key: Secret | None = _UNSET,
        style: str | None = None,
        json: Any = None,
        timeout: float | None = None,
        retries: bool = False,
        max_body: int = PROBE_MAX_BODY,
        auth_style: str | None = None,
        **kwargs: Any,
    ) -> ProbeResult:
        """Send one request that never raises for network errors and never waits unboundedly.

        ``style`` (alias ``auth_style``) is how the key is presented (:data:`AUTH_STYLES`).
        The body is read in chunks, at most ``max_body`` bytes and for at most about twice the
        timeout. Retries are off unless ``retries=True``: a probe reports the first answer.
        """
        style = style or auth_style
        limit = float(timeout or self.timeout)
        if json is not None:
            kwargs["json"] = json
        kwargs["timeout"] = limit
        kwargs["stream"] = True
        previous = getattr(self._local, "no_retry", False)
        self._local.no_retry = not retries
        try:
            attempt = self._perform(method, url, key, style, label, kwargs)
        finally:
            self._local.no_retry = previous
        if attempt.error is not None:
            if not isinstance(attempt.error, _NETWORK_ERRORS):
                raise attempt.error
            assert attempt.exchange is not None
            return ProbeResult(exchange=attempt.exchange, response=None)
        response = attempt.response
        assert response is not None
        try:
            body, truncated = _read_bounded(response, max_body, deadline=attempt.started + 2 * limit + 1)
        except _NETWORK_ERRORS as exc:  # the status came, the body broke off
            body, truncated = b"", False
            error, detail = classify_error(exc)
            attempt.read_error = (error, f"reading the body: {detail}")
        finally:
            response.close()
        response._content = body
        response._content_consumed = True
        exchange = self._exchange_for(attempt, with_body=True)
        if truncated:
            exchange.headers["body-truncated"] = f"kept the first {len(body)} bytes"
        self._record(exchange)
        obj, problem = parse_json_safely(response)
        return ProbeResult(exchange=exchange, response=response, json=obj, json_problem=problem)

    # -- internals ----------------------------------------------------------------------------
    def _perform(self, method: str | bytes, url: str | bytes, key: Secret | None, style: str | None,
                 label: str | None, kwargs: dict[str, Any]) -> _Attempt:
        method_s = (method.decode() if isinstance(method, bytes) else str(method)).upper()
        url_s = url.decode() if isinstance(url, bytes) else str(url)
        use_key = self.key if key is _UNSET else key
        # A request that carries its own Authorization / X-API-Key header (an edge check sending
        # "Basic ...", a raw key, lower-case "bearer") is sent as given: the session adds no key.
        explicit = self._explicit_auth(kwargs.get("headers"))
        if explicit is not None:
            presentation = explicit
        else:
            presentation = self._present_key(use_key, style or self.auth_style, kwargs)
            if presentation == "none":
                presentation = self._explicit_auth(self.headers) or "none"
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        budget = self.reachability.budget_for(url_s) if self.reachability is not None else None
        if budget is not None:  # first contact with this host: a short connect/first-byte budget
            kwargs["timeout"] = cap_timeout(kwargs["timeout"], budget)
        attempt = _Attempt(method=method_s, url=_recorded_url(url_s, kwargs.get("params")),
                           auth=presentation, label=label,
                           request_body=request_body_shape(kwargs.get("json"), kwargs.get("data")))
        try:
            attempt.response = super().request(method_s, url_s, **kwargs)
        except Exception as exc:  # noqa: BLE001  # recorded here; request() re-raises, probe() decides
            attempt.error = exc
            error, detail = classify_error(exc)
            waited = _ms(attempt.started)
            if budget is not None and error == "timeout":
                detail = (f"no answer within the {budget:g} s connect/first-byte budget "
                          f"(--hokusai-connect-timeout; waited {waited / 1000:.1f} s): {detail}")
            attempt.exchange = self._record(Exchange(
                method=method_s, url=attempt.url, elapsed_ms=waited, error=error,
                error_detail=detail, auth=presentation, label=label, started_at=attempt.started_wall,
                request_body=attempt.request_body))
            if budget is not None and self.reachability is not None:
                self.reachability.note_no_answer(attempt.exchange)
            return attempt
        if self.reachability is not None and budget is not None:
            self.reachability.mark_answered(url_s)
        return attempt

    def _exchange_for(self, attempt: _Attempt, *, with_body: bool) -> Exchange:
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
            elapsed_ms=_ms(attempt.started), error=error, error_detail=detail, auth=attempt.auth,
            label=attempt.label, headers=headers, started_at=attempt.started_wall,
            request_body=attempt.request_body)

    def _record(self, exchange: Exchange) -> Exchange:
        if self.recorder is not None:
            return self.recorder.add(exchange)
        return exchange


_POSITIONAL = ("params", "data", "headers", "cookies", "files", "auth", "timeout", "allow_redirects",
               "proxies", "hooks", "stream", "verify", "cert", "json")
_NETWORK_ERRORS = (requests.RequestException, u3exc.HTTPError, OSError, ValueError, http.client.HTTPException)


@dataclass
class _Attempt:
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


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 2)


def _recorded_url(url: str, params: Any) -> str:
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


def _read_bounded(response: requests.Response, max_body: int, *, deadline: float) -> tuple[bytes, bool]:
    """Read at most ``max_body`` bytes of a streamed body, stopping at ``deadline`` (monotonic)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=8192):
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_body or time.monotonic() > deadline:
            return b"".join(chunks)[:max_body], True
    return b"".join(chunks), False
