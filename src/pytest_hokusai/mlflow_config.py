"""Pointing the stock MLflow client at a tracking URI, scoped: the environment variables and
mlflow's process-global URIs are set for a ``with`` block and restored exactly afterwards.

mlflow is imported inside the functions only, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .secret import Secret

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MLFLOW_ENV_VARS", "fluent_uris", "make_client", "mlflow_env", "mlflow_globals_kept", "scoped_environ"]

#: Environment variables :func:`mlflow_env` sets or clears (and restores afterwards).
MLFLOW_ENV_VARS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_REGISTRY_URI",
    "MLFLOW_DISABLE_TELEMETRY",
)

_env_lock = threading.RLock()


# -- scoped client configuration ------------------------------------------------------------------
@contextmanager
def scoped_environ(values: Mapping[str, str | Secret | None], *, restore: Iterable[str] = ()) -> Iterator[None]:
    """Set each variable of ``values`` (a :class:`Secret` is revealed only here, so that no local holds
    the key for a ``--showlocals`` traceback) or remove it (``None``) for the block; afterwards those
    and the ``restore`` names are exactly as before (absent ones removed), whatever the block did."""
    saved = {name: os.environ.get(name) for name in dict.fromkeys([*values, *restore])}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value.reveal() if isinstance(value, Secret) else value
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def _mlflow_globals() -> tuple[Any, Any] | None:
    """mlflow's process-global (tracking, registry) URIs, or None while mlflow is not imported."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri


@contextmanager
def mlflow_globals_kept() -> Iterator[None]:
    """mlflow's process-global tracking and registry URIs are as before after the block (unset if
    mlflow was imported only inside it), whatever the block changed (``mlflow.set_tracking_uri``,
    the SDK). Imports mlflow only if it is imported by then."""
    saved = _mlflow_globals()
    try:
        yield
    finally:
        if "mlflow" in sys.modules:
            import mlflow
            from mlflow.tracking._model_registry import utils as registry_utils

            previous_tracking, previous_registry = saved or (None, None)
            mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]  # None means unset
            setattr(registry_utils, "_registry_uri", previous_registry)  # noqa: B010  # a private global of mlflow


def _point_mlflow_globals(tracking_uri: str) -> None:
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    mlflow.set_tracking_uri(tracking_uri)
    setattr(registry_utils, "_registry_uri", tracking_uri)  # noqa: B010


@contextmanager
def fluent_uris(tracking_uri: str) -> Iterator[None]:
    """Point mlflow's process-global tracking and registry URIs at ``tracking_uri``, then restore."""
    with mlflow_globals_kept():
        _point_mlflow_globals(tracking_uri)
        yield


@contextmanager
def mlflow_env(
    tracking_uri: str,
    key: Secret | None,
    *,
    max_retries: int = 0,
    request_timeout: float = 30.0,
) -> Iterator[None]:
    """Configure the stock MLflow client for ``tracking_uri`` with ``key`` as its token.

    Sets ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` (unless ``key`` is None),
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (whole seconds: MLflow
    parses it as an int) and ``MLFLOW_DISABLE_TELEMETRY``; clears ``MLFLOW_TRACKING_USERNAME`` /
    ``_PASSWORD`` (Basic auth would win over the token) and ``MLFLOW_REGISTRY_URI``. If mlflow is
    imported, its global tracking and registry URIs are pointed at ``tracking_uri`` too. On exit,
    every variable is restored exactly (absent ones removed) and so are mlflow's globals.

    The environment is process-wide: do not run two of these concurrently in threads.
    """
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    values: dict[str, str | Secret | None] = {  # the key stays a Secret until scoped_environ writes it
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_TOKEN": key,
        "MLFLOW_TRACKING_USERNAME": None,
        "MLFLOW_TRACKING_PASSWORD": None,
        "MLFLOW_REGISTRY_URI": None,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(max_retries)),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(request_timeout))),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with _env_lock, scoped_environ(values, restore=MLFLOW_ENV_VARS), mlflow_globals_kept():
        if "mlflow" in sys.modules:  # else the variables above are what mlflow reads when imported
            _point_mlflow_globals(tracking_uri)
        yield


def make_client(tracking_uri: str) -> MlflowClient:
    """An :class:`mlflow.MlflowClient` for ``tracking_uri`` (registry at the same URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
