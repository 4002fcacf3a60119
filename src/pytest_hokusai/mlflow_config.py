"""Pointing the stock MLflow client at a tracking URI, scoped: the environment variables and
mlflow's process-global URIs are set for a ``with`` block and restored exactly afterwards.

mlflow is imported inside the functions only, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .secret import Secret

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MLFLOW_ENV_VARS", "fluent_uris", "make_client", "mlflow_env"]

#: Environment variables :func:`mlflow_env` sets or clears (and restores afterwards).
MLFLOW_ENV_VARS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_REGISTRY_URI",
    "MLFLOW_DISABLE_TELEMETRY",
)

_env_lock = threading.RLock()


# -- scoped client configuration ------------------------------------------------------------------
@contextmanager
def fluent_uris(tracking_uri: str) -> Iterator[None]:
    """Point mlflow's process-global tracking and registry URIs at ``tracking_uri``, then restore."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous_tracking = tracking_utils._tracking_uri
    previous_registry = registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    setattr(registry_utils, "_registry_uri", tracking_uri)  # noqa: B010  # a private global of mlflow
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]  # None means unset
        setattr(registry_utils, "_registry_uri", previous_registry)  # noqa: B010


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
    values: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_TOKEN": key.reveal() if key else None,
        "MLFLOW_TRACKING_USERNAME": None,
        "MLFLOW_TRACKING_PASSWORD": None,
        "MLFLOW_REGISTRY_URI": None,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(max_retries)),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(request_timeout))),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with _env_lock:
        saved = {name: os.environ.get(name) for name in MLFLOW_ENV_VARS}
        had_mlflow = "mlflow" in sys.modules
        globals_saved: tuple[Any, Any] | None = None
        try:
            for name, value in values.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if had_mlflow:
                from mlflow.tracking._model_registry import utils as registry_utils
                from mlflow.tracking._tracking_service import utils as tracking_utils

                globals_saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
                import mlflow

                mlflow.set_tracking_uri(tracking_uri)
                setattr(registry_utils, "_registry_uri", tracking_uri)  # noqa: B010
            yield
        finally:
            if "mlflow" in sys.modules:
                import mlflow
                from mlflow.tracking._model_registry import utils as registry_utils

                previous_tracking, previous_registry = globals_saved or (None, None)
                mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]  # None means unset
                setattr(registry_utils, "_registry_uri", previous_registry)  # noqa: B010
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def make_client(tracking_uri: str) -> MlflowClient:
    """An :class:`mlflow.MlflowClient` for ``tracking_uri`` (registry at the same URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
