"""Recording the MLflow client's HTTP as evidence: every ``http_request`` it makes becomes a
redacted :class:`~pytest_hokusai.evidence.Exchange` (label ``mlflow-client``).

mlflow is imported inside :func:`record_mlflow_http` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .evidence import Exchange, Recorder, clean_url, excerpt, request_body_shape
from .http import EXCERPT_BYTES, RECORDED_HEADERS, classify_error, scrub
from .secret import mask

__all__ = ["MLFLOW_LABEL", "record_mlflow_http"]

MLFLOW_LABEL = "mlflow-client"

# -- recording the MLflow client's HTTP ------------------------------------------------------------
_hook_lock = threading.Lock()
_GAVE_UP = re.compile(r"too many (\d{3}) error responses")
_active_recorders: list[Recorder] = []
_original_http_request: Callable[..., Any] | None = None
_installed_wrapper: Callable[..., Any] | None = None


def _auth_of(host_creds: Any) -> str:
    token = getattr(host_creds, "token", None)
    if getattr(host_creds, "username", None) and getattr(host_creds, "password", None):
        return "Basic ***"
    if token:
        return f"Bearer {mask(str(token))}"
    return "none"


def _make_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    def http_request(host_creds: Any, endpoint: str, method: str, *args: Any, **kwargs: Any) -> Any:
        started_wall = time.time()
        started = time.monotonic()
        host = str(getattr(host_creds, "host", "")).rstrip("/")
        url = f"{host}{endpoint}"
        if kwargs.get("params"):
            from requests.models import PreparedRequest

            prepared = PreparedRequest()
            with contextlib.suppress(ValueError, TypeError):
                prepared.prepare_url(url, kwargs["params"])
                url = prepared.url or url
        exchange = Exchange(method=str(method).upper(), url=scrub(clean_url(url)), auth=_auth_of(host_creds),
                            label=MLFLOW_LABEL, started_at=started_wall)
        with contextlib.suppress(Exception):  # evidence must never break the client
            exchange.request_body = request_body_shape(kwargs.get("json"), kwargs.get("data"))
        try:
            response = original(host_creds, endpoint, method, *args, **kwargs)
        except Exception as exc:
            exchange.elapsed_ms = round((time.monotonic() - started) * 1000.0, 2)
            gave_up = _GAVE_UP.search(str(exc))
            if gave_up:  # the client's retry policy raised on a retryable status: keep the status
                exchange.status = int(gave_up.group(1))
                exchange.error_detail = scrub(f"the MLflow client gave up: too many {gave_up.group(1)} "
                                              "error responses (body not kept)")
            else:
                exchange.error, exchange.error_detail = classify_error(exc)
            _emit(exchange)
            raise
        exchange.elapsed_ms = round((time.monotonic() - started) * 1000.0, 2)
        try:
            exchange.status = int(response.status_code)
            headers = getattr(response, "headers", {}) or {}
            exchange.content_type = headers.get("content-type")
            exchange.headers = {h: scrub(headers[h]) for h in RECORDED_HEADERS if h in headers}
            if not kwargs.get("stream"):
                exchange.body_excerpt = scrub(excerpt((response.content or b"")[:EXCERPT_BYTES]))
        except Exception as exc:  # noqa: BLE001  # evidence must never break the client
            exchange.error_detail = f"(could not read the response for evidence: {type(exc).__name__})"
        _emit(exchange)
        return response

    setattr(http_request, "__wrapped__", original)  # noqa: B010
    setattr(http_request, "_hokusai_wrapper", True)  # noqa: B010
    return http_request


def _emit(exchange: Exchange) -> None:
    with _hook_lock:
        recorders = list(_active_recorders)
    copies = [exchange] + [dataclasses.replace(exchange, headers=dict(exchange.headers)) for _ in recorders[1:]]
    for recorder, copy in zip(recorders, copies):
        recorder.add(copy)


def _patch_targets(value: Any) -> list[Any]:
    """mlflow modules (telemetry excepted) whose ``http_request`` name is ``value``."""
    return [module for name, module in list(sys.modules.items())
            if name.startswith("mlflow.") and not name.startswith("mlflow.telemetry")
            and module is not None and getattr(module, "http_request", None) is value]


@contextmanager
def record_mlflow_http(recorder: Recorder) -> Iterator[Recorder]:
    """Record an :class:`Exchange` (label ``mlflow-client``) for every ``http_request`` the MLflow
    client makes: REST calls and artifact transfers, with status, URL, short redacted body
    excerpt, latency and the error class when no status came back.

    ``mlflow.utils.rest_utils.http_request`` and every mlflow module that imported it by name are
    patched while at least one recorder is active; the originals are restored when the last one
    exits. One call is one exchange (the client's own retries happen inside it).
    """
    global _original_http_request, _installed_wrapper
    from mlflow.utils import rest_utils

    with _hook_lock:
        if not _active_recorders:
            original: Callable[..., Any] = rest_utils.http_request
            if getattr(original, "_hokusai_wrapper", False):  # left behind by a crash: unwrap
                original = getattr(original, "__wrapped__")  # noqa: B009
            _original_http_request = original
            _installed_wrapper = wrapper = _make_wrapper(original)
            for module in [rest_utils, *_patch_targets(original)]:
                module.http_request = wrapper
        _active_recorders.append(recorder)
    try:
        yield recorder
    finally:
        with _hook_lock:
            _active_recorders.remove(recorder)
            if not _active_recorders and _original_http_request is not None:
                for module in _patch_targets(_installed_wrapper):
                    module.http_request = _original_http_request
                if rest_utils.http_request is _installed_wrapper:
                    rest_utils.http_request = _original_http_request
                _original_http_request = _installed_wrapper = None
