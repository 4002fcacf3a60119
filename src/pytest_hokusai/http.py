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

What an exchange keeps as evidence (redaction, excerpt, title) is in :mod:`.http_capture`, how a
failed request is classified in :mod:`.http_errors`, the connect budget in :mod:`.reachability`;
their public names stay importable from here.

This module imports only requests and urllib3 (never mlflow, sklearn, pandas or fastapi).
"""

from __future__ import annotations

import http.client
import threading
from typing import Any, Literal

import requests
import urllib3.exceptions as u3exc
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.util.retry import Retry

from .evidence import Exchange, Recorder, request_body_shape
from .http_capture import (
    EXCERPT_BYTES,
    PROBE_MAX_BODY,
    RECORDED_HEADERS,
    Attempt,
    ProbeResult,
    exchange_for,
    html_title,
    ms_since,
    parse_json_safely,
    read_bounded,
    recorded_url,
    scrub,
)
from .http_errors import classify_error
from .reachability import HostReachability, cap_timeout
from .secret import KEY_PREFIXES, Secret, mask

__all__ = [
    "AUTH_STYLES",
    "EXCERPT_BYTES",
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

_UNSET: Any = object()


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
        self._record(exchange_for(attempt, with_body=not kwargs.get("stream")))
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
            body, truncated = read_bounded(response, max_body, deadline=attempt.started + 2 * limit + 1)
        except _NETWORK_ERRORS as exc:  # the status came, the body broke off
            body, truncated = b"", False
            error, detail = classify_error(exc)
            attempt.read_error = (error, f"reading the body: {detail}")
        finally:
            response.close()
        response._content = body
        response._content_consumed = True
        exchange = exchange_for(attempt, with_body=True)
        if truncated:
            exchange.headers["body-truncated"] = f"kept the first {len(body)} bytes"
        self._record(exchange)
        obj, problem = parse_json_safely(response)
        return ProbeResult(exchange=exchange, response=response, json=obj, json_problem=problem)

    # -- internals ----------------------------------------------------------------------------
    def _perform(self, method: str | bytes, url: str | bytes, key: Secret | None, style: str | None,
                 label: str | None, kwargs: dict[str, Any]) -> Attempt:
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
        attempt = Attempt(method=method_s, url=recorded_url(url_s, kwargs.get("params")),
                           auth=presentation, label=label,
                           request_body=request_body_shape(kwargs.get("json"), kwargs.get("data")))
        try:
            attempt.response = super().request(method_s, url_s, **kwargs)
        except Exception as exc:  # noqa: BLE001  # recorded here; request() re-raises, probe() decides
            attempt.error = exc
            error, detail = classify_error(exc)
            waited = ms_since(attempt.started)
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

    def _record(self, exchange: Exchange) -> Exchange:
        if self.recorder is not None:
            return self.recorder.add(exchange)
        return exchange


_POSITIONAL = ("params", "data", "headers", "cookies", "files", "auth", "timeout", "allow_redirects",
               "proxies", "hooks", "stream", "verify", "cert", "json")
_NETWORK_ERRORS = (requests.RequestException, u3exc.HTTPError, OSError, ValueError, http.client.HTTPException)
