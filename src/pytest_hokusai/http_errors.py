"""Classifying a failed HTTP request: the exception chain of requests/urllib3/socket errors mapped
to one of ``evidence.ERROR_CLASSES`` with a short, redacted detail.

This module imports only requests and urllib3.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

import requests
import urllib3.exceptions as u3exc

from .http_capture import scrub

__all__ = ["classify_error"]


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
