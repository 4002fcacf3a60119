"""The hokusai-ml-platform SDK as a third party uses it: finding it, handing it the key and the
deployment's URLs the way it reads them, recording what it did, and cleaning up after it.

The SDK (import name ``hokusai``) is not on PyPI (contract section 6; PyPI's ``hokusai`` is an
unrelated Docker toolkit). Nothing here imports it, mlflow or requests at module level.

* :func:`load_sdk` returns the SDK module, or the reason to skip (not installed, the wrong package,
  installed without its ``[ml]`` extra), each naming the working install line;
* :func:`sdk_environment` scopes ``HOKUSAI_API_KEY``, ``HOKUSAI_API_ENDPOINT`` and
  ``MLFLOW_TRACKING_URI`` / ``_TOKEN`` to a block and restores them, and mlflow's global tracking
  URI, exactly afterwards (the SDK writes both);
* :func:`sdk_backoff_skipped` lets the SDK's retry pauses return at once where a check provokes a
  failure on purpose;
* :func:`event_exchange` turns the outcome of the SDK's registration-event POST (it uses urllib,
  which the run's recorder does not see) into an :class:`~pytest_hokusai.evidence.Exchange`;
* the SDK checks register under the canary names of :mod:`.canary` (``sdk``, ``sdk-cli``) and
  clean up with :func:`~pytest_hokusai.canary.remove_registration`, like every other check.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, SupportsIndex

from .canary import canary_name
from .diagnosis.evidence import FACT_TRACKING_URI_MOVED_TO
from .diagnosis.matchers.client import EVENT_LABEL, FACT_SDK_FAILURES
from .evidence import Exchange, clean_url, excerpt, request_body_shape
from .mlflow_config import mlflow_globals_kept, scoped_environ
from .secret import Secret, redact

__all__ = [
    "CANARY_CLI_MODEL",
    "CANARY_MODEL",
    "EVENT_LABEL",
    "FACT_SDK_FAILURES",
    "FACT_TRACKING_URI_MOVED_TO",
    "SDK_ENV_VARS",
    "SDK_INSTALL",
    "SDK_MISSING_MESSAGE",
    "SdkStepError",
    "check_token_id",
    "cli_command",
    "event_exchange",
    "event_payload",
    "event_url",
    "load_sdk",
    "sdk_api_endpoint",
    "sdk_backoff_skipped",
    "sdk_environment",
    "sdk_failure",
]

#: The working install line (contract section 6): the documented PyPI name does not exist.
SDK_INSTALL = ('pip install "hokusai-ml-platform[ml] @ git+https://github.com/Hokusai-protocol/'
               'hokusai-data-pipeline.git#subdirectory=hokusai-ml-platform"')
SDK_MISSING_MESSAGE = (
    "the hokusai-ml-platform SDK is not installed; it is not on PyPI (PyPI's 'hokusai' is an unrelated "
    f"package), install it from git: {SDK_INSTALL}"
)
SDK_WRONG_PACKAGE_MESSAGE = (
    "`import hokusai` is the unrelated PyPI package 'hokusai' (Artsy's Docker toolkit), not the Hokusai "
    f"ML platform SDK; uninstall it (pip uninstall hokusai) and install the SDK: {SDK_INSTALL}"
)
SDK_NO_ML_EXTRA_MESSAGE = (
    "the hokusai-ml-platform SDK is installed without its [ml] extra (ModelRegistry needs mlflow, "
    f"metaflow, redis); install it with the extra: {SDK_INSTALL}"
)

#: The canary models the SDK checks register new versions of (deleted after; see :mod:`.canary`).
CANARY_MODEL = canary_name("sdk")
CANARY_CLI_MODEL = canary_name("sdk-cli")
#: The path the SDK posts its event to (contract section 4).
EVENT_PATH = "/api/models/tokenized-registration-events"

#: What :func:`sdk_environment` sets or clears, and restores.
SDK_ENV_VARS = (
    "HOKUSAI_API_KEY", "HOKUSAI_API_ENDPOINT", "HOKUSAI_MOCK_MODE", "HOKUSAI_OPTIONAL_MLFLOW",
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
)


def load_sdk() -> tuple[ModuleType | None, str]:
    """``(module, "")`` when the real SDK with its ML extra is importable, else ``(None, reason)``."""
    try:
        if importlib.util.find_spec("hokusai") is None:
            return None, SDK_MISSING_MESSAGE
        module = importlib.import_module("hokusai")
    except (ImportError, ValueError):  # ValueError: a module entry blocked with None (sys.modules)
        return None, SDK_MISSING_MESSAGE
    try:
        getattr(module, "ModelRegistry")  # noqa: B009  # a lazy attribute: importing it is the test
    except AttributeError:
        return None, SDK_WRONG_PACKAGE_MESSAGE
    except ImportError:  # MissingMLExtraError
        return None, SDK_NO_ML_EXTRA_MESSAGE
    return module, ""


def sdk_api_endpoint(api_url: str) -> str:
    """The SDK's ``api_endpoint`` for an API URL: the SDK's default is ``https://registry.hokus.ai/api``
    for the API at ``https://registry.hokus.ai`` (contract section 6)."""
    return api_url.rstrip("/") + "/api"


def check_token_id() -> str:
    """A recognisable, run-unique token id in the SDK's format (``[A-Za-z0-9-]``, at most 64)."""
    return f"HOKUSAI-CHECK-{secrets.token_hex(4).upper()}"


@contextmanager
def sdk_environment(*, api_url: str, tracking_uri: str, key: Secret) -> Iterator[None]:
    """The environment third parties are told to set (contract section 0), for this block only.

    Sets ``HOKUSAI_API_KEY`` and ``MLFLOW_TRACKING_TOKEN`` to the key, ``HOKUSAI_API_ENDPOINT`` to
    ``{api_url}/api`` and ``MLFLOW_TRACKING_URI`` to the tracking URI; removes
    ``HOKUSAI_MOCK_MODE`` / ``HOKUSAI_OPTIONAL_MLFLOW`` (the SDK tests them for presence and would
    skip the deployment) and Basic-auth variables. Afterwards every variable and mlflow's global
    tracking URI are restored exactly, whatever the SDK changed.
    """
    # The key is revealed only where it is written (no local holds it: --showlocals tracebacks).
    values: dict[str, str | Secret | None] = {
        "HOKUSAI_API_KEY": key, "HOKUSAI_API_ENDPOINT": sdk_api_endpoint(api_url),
        "HOKUSAI_MOCK_MODE": None, "HOKUSAI_OPTIONAL_MLFLOW": None,
        "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_TRACKING_TOKEN": key,
        "MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None,
    }
    with scoped_environ(values, restore=SDK_ENV_VARS), mlflow_globals_kept():
        yield


@contextmanager
def sdk_backoff_skipped() -> Iterator[list[float]]:
    """Within the block, ``time.sleep`` called from the SDK's own code returns at once; the delays it
    asked for are collected in the yielded list. Every other caller (other threads included) sleeps.

    ``ModelRegistry(tracking_uri=...)`` tries a failing tracking URI three times, sleeping 1 s and
    then 2 s between tries (``hokusai/core/registry.py``). The fallback check provokes that failure
    on purpose and asserts what the SDK leaves behind afterwards (token, tracking URI), which the
    wait does not change: the check keeps its assertions and saves the 3 s.
    """
    import time

    real_sleep = time.sleep
    skipped: list[float] = []

    def sleep(seconds: float | SupportsIndex) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "hokusai" or caller.startswith("hokusai."):
            skipped.append(float(seconds))
            return
        real_sleep(seconds)

    time.sleep = sleep
    try:
        yield skipped
    finally:
        time.sleep = real_sleep


def cli_environment(*, api_url: str, tracking_uri: str, key: Secret, timeout_s: float,
                    base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``hokusai model register`` subprocess: the caller's, without any
    HOKUSAI_* or MLFLOW_* variable, plus what a third party sets (the key only here, never in argv)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    env.update({
        "HOKUSAI_API_KEY": key.reveal(), "HOKUSAI_API_ENDPOINT": sdk_api_endpoint(api_url),
        "MLFLOW_TRACKING_URI": tracking_uri,
        # Fail in seconds rather than after MLflow's ~4-minute retry loop (contract section 8).
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(5, int(timeout_s))),
        "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1",
    })
    return env


def cli_command() -> list[str]:
    """How to run the SDK's ``hokusai`` command: its console script next to this interpreter (not a
    ``hokusai`` elsewhere on PATH, which may be the unrelated PyPI package), else its click group."""
    script = Path(sys.executable).with_name("hokusai")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from hokusai.cli import cli; sys.exit(cli())"]


# -- the registration event -------------------------------------------------------------------
def event_url(sdk: ModuleType | None, api_endpoint: str) -> str:
    """Where the SDK posts its event for this endpoint, by the SDK's own helpers when it has them."""
    try:
        notification = importlib.import_module("hokusai.core.notification")
        base = notification.resolve_registration_event_api_endpoint(api_endpoint)
        return str(notification.build_pipeline_registration_event_url(base))
    except (ImportError, AttributeError):
        base = api_endpoint.rstrip("/")
        return base + ("/models/tokenized-registration-events" if base.endswith("/api") else EVENT_PATH)


def event_payload(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event body the SDK builds from a registration result (its own builder), or None."""
    try:
        notification = importlib.import_module("hokusai.core.notification")
        return dict(notification.build_registration_event_payload(dict(fields)))
    except Exception:  # noqa: BLE001  # an SDK without the builder, or fields it cannot use: no body shape
        return None


def event_exchange(url: str, key: Secret, *, response: Any = None, error: BaseException | None = None,
                   elapsed_ms: float = 0.0, payload: Mapping[str, Any] | None = None) -> Exchange:
    """The registration-event POST as evidence: the platform's answer when the SDK reports one
    (``notification_response``, or a ``NotificationError``'s ``status_code`` / ``response_body``),
    else the connection error the SDK met. ``elapsed_ms`` is the SDK call's duration: the event is its
    last step, and the SDK does not time the POST alone."""
    exchange = Exchange(method="POST", url=clean_url(url), auth=f"Bearer {key.masked}", label=EVENT_LABEL,
                        elapsed_ms=round(elapsed_ms, 2),
                        request_body=request_body_shape(dict(payload)) if payload is not None else None)
    if error is None:
        exchange.status = 200
        exchange.content_type = "application/json"
        exchange.body_excerpt = excerpt(json.dumps(response, sort_keys=True) if response is not None else "")
        return exchange
    status = getattr(error, "status_code", None)
    body = getattr(error, "response_body", None)
    if isinstance(status, int):
        exchange.status = status
        exchange.body_excerpt = excerpt(body or "")
        exchange.content_type = "application/json" if (body or "").lstrip()[:1] in ("{", "[") else None
    else:
        text = str(error)
        exchange.error = "refused" if "refused" in text.lower() else "timeout" if "timed out" in text.lower() \
            else "connection"
        exchange.error_detail = excerpt(text, 200)
    return exchange


# -- failures ----------------------------------------------------------------------------------
class SdkStepError(AssertionError):
    """An SDK step failed; the message starts with the step."""


def sdk_failure(step: str, error: BaseException, nodeid: str) -> dict[str, Any]:
    """One :data:`FACT_SDK_FAILURES` entry (JSON-ready, redacted)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return {"step": step, "error": redact(f"{type(error).__name__}: {text}")[:600], "nodeid": nodeid}


_CLI_FIELD = re.compile(r"^\s*(Model name|Version|Token ID|MLflow run ID|Status):\s*(.+?)\s*$", re.MULTILINE)


def parse_cli_output(stdout: str) -> dict[str, str]:
    """The summary ``hokusai model register`` prints: ``{"Model name": ..., "Version": ..., ...}``."""
    return {m.group(1): m.group(2) for m in _CLI_FIELD.finditer(stdout)}
