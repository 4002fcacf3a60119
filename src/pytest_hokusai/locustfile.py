"""A Locust load test for a Hokusai deployment (the ``load`` extra: ``pip install 'pytest-hokusai[load]'``).

Run it with Locust, never import it into a pytest process (importing :mod:`locust` monkeypatches
the standard library with gevent)::

    HOKUSAI_API_KEY=... locust -f "$(python -c 'import pytest_hokusai.locustfile as m; print(m.__file__)')" \\
        --headless -u 20 -r 5 -t 1m --host https://registry.hokus.ai

Target and key come from the same ``HOKUSAI_*`` environment as the pytest plugin
(:func:`~pytest_hokusai.settings.resolve_settings`, :func:`~pytest_hokusai.settings.resolve_keys`):
``HOKUSAI_API_URL``, ``HOKUSAI_AUTH_URL``, ``HOKUSAI_TRACKING_URI``, ``HOKUSAI_SERVICE_ID``,
``HOKUSAI_TIMEOUT``, ``HOKUSAI_API_KEY`` or ``HOKUSAI_API_KEY_FILE``. Locust's ``--host`` (or the
host typed into the web UI) replaces the API URL, and the tracking URI is derived from it as the
plugin derives it (``{api-url}/api/mlflow``) unless ``HOKUSAI_TRACKING_URI`` is set.

:class:`HokusaiUser` runs three weighted tasks, each request named so that statistics never show
a URL: ``auth validate`` (the auth service's key validation), ``proxy experiments/search`` (a read
through the authenticating proxy) and ``proxy register model`` (create a registered model and a
version through the proxy, then ``proxy delete model``). Weights come from
``HOKUSAI_LOAD_WEIGHTS`` (default ``validate=5,read=10,register=1``; 0 switches a task off) and the
wait between tasks from ``HOKUSAI_LOAD_WAIT`` (``MIN,MAX`` seconds, default ``0.5,2``).

The key is sent only in the ``Authorization`` header, never in a URL; failure messages carry the
status and a short redacted body excerpt (:func:`pytest_hokusai.evidence.excerpt`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from locust import HttpUser, TaskSet, between, events
from locust.env import Environment
from locust.runners import MasterRunner, Runner

# Absolute imports: Locust loads this file by path, as a top-level module.
from pytest_hokusai.errors import SettingsError
from pytest_hokusai.evidence import excerpt
from pytest_hokusai.secret import Secret
from pytest_hokusai.settings import (
    DEFAULT_API_URL,
    KEY_ENV,
    SPECS_BY_NAME,
    HokusaiSettings,
    resolve_keys,
    resolve_settings,
)

__all__ = [
    "DEFAULT_WAIT",
    "DEFAULT_WEIGHTS",
    "REQUEST_NAMES",
    "WAIT_ENV",
    "WEIGHTS_ENV",
    "HokusaiUser",
    "LoadConfig",
    "load_config",
    "parse_wait",
    "parse_weights",
]

WEIGHTS_ENV = "HOKUSAI_LOAD_WEIGHTS"
WAIT_ENV = "HOKUSAI_LOAD_WAIT"
DEFAULT_WEIGHTS: Mapping[str, int] = {"validate": 5, "read": 10, "register": 1}
DEFAULT_WAIT = (0.5, 2.0)
#: Task name -> the request names it reports under (what the statistics and CSV files show).
REQUEST_NAMES: Mapping[str, tuple[str, ...]] = {
    "validate": ("auth validate",),
    "read": ("proxy experiments/search",),
    "register": ("proxy register model", "proxy delete model"),
}
#: The artifact location recorded on each model version (never read: no artifact is uploaded). An s3 URI,
#: like the platform's artifact root: MLflow >= 3.1x refuses an ``mlflow-artifacts:`` source unless a
#: run_id that contains it comes along (3.9.0 took it), and no run is created here.
MODEL_SOURCE = "s3://hokusai-locust-placeholder/artifacts/locust/model"
EXCERPT_CHARS = 160

log = logging.getLogger("pytest_hokusai.locust")


def parse_weights(raw: str | None) -> dict[str, int]:
    """Parse ``validate=5,read=10,register=1``; names left out keep their default weight.

    Raises :class:`SettingsError` naming ``HOKUSAI_LOAD_WEIGHTS`` for an unknown task, a weight that
    is not a whole number from 0 to 1000, or all weights 0.
    """
    weights = dict(DEFAULT_WEIGHTS)
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in weights:
            raise SettingsError(
                f"Invalid {WEIGHTS_ENV} entry {item.strip()!r}: use NAME=WEIGHT pairs separated by commas, "
                f"NAME one of {', '.join(DEFAULT_WEIGHTS)} (e.g. validate=5,read=10,register=1)."
            )
        try:
            weight = int(value.strip())
        except ValueError:
            weight = -1
        if not 0 <= weight <= 1000:
            raise SettingsError(
                f"Invalid {WEIGHTS_ENV} weight {value.strip()!r} for {name}: must be a whole number from 0 to 1000."
            )
        weights[name] = weight
    if not any(weights.values()):
        raise SettingsError(f"{WEIGHTS_ENV} switches every task off; give at least one task a weight above 0.")
    return weights


def parse_wait(raw: str | None) -> tuple[float, float]:
    """Parse ``MIN,MAX`` seconds between a user's tasks (``HOKUSAI_LOAD_WAIT``)."""
    if not (raw or "").strip():
        return DEFAULT_WAIT
    parts = [p.strip() for p in (raw or "").split(",")]
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (-1.0, -1.0)
    except ValueError:
        low = high = -1.0
    if not 0 <= low <= high <= 3600:
        raise SettingsError(
            f"Invalid {WAIT_ENV} {raw!r}: must be MIN,MAX seconds with 0 <= MIN <= MAX <= 3600 (e.g. 0.5,2)."
        )
    return low, high


@dataclass(frozen=True)
class LoadConfig:
    """What a load-test user needs: the resolved settings and the key (a :class:`Secret`)."""

    settings: HokusaiSettings
    key: Secret | None

    @property
    def validate_url(self) -> str:
        return self.settings.auth_url + "/api/v1/keys/validate"

    def mlflow_url(self, path: str) -> str:
        """``{tracking_uri}/api/2.0/mlflow/{path}``."""
        return f"{self.settings.tracking_uri}/api/2.0/mlflow/{path}"


def load_config(host: str | None, environ: Mapping[str, str] | None = None, *, need_key: bool = True) -> LoadConfig:
    """Resolve settings (``HOKUSAI_*`` environment, ``host`` replacing the API URL) and the key.

    Raises :class:`SettingsError` with the fix for an invalid setting or ``--host``, for
    ``HOKUSAI_TARGET=local`` (Locust does not start the stack) and, with ``need_key``, for a missing
    or malformed key.
    """
    env = os.environ if environ is None else environ
    cli: dict[str, Any] = {}
    if host and host.strip():
        try:
            cli["hokusai_api_url"] = SPECS_BY_NAME["api-url"].parse(host)
        except ValueError as exc:
            raise SettingsError(f"Invalid Locust host {host.strip()!r} (--host or the web UI): {exc}.") from None
    settings = resolve_settings(cli, env, {})
    if settings.is_local:
        raise SettingsError(
            "HOKUSAI_TARGET=local: the locustfile does not start the local stack. Start it with "
            "'hokusai-stack up' and paste the export lines it prints (they point HOKUSAI_API_URL and "
            "HOKUSAI_AUTH_URL at the stack and set HOKUSAI_TARGET=remote)."
        )
    key = resolve_keys(settings, env).primary
    if need_key:
        if key is None:
            raise SettingsError(
                f"No Hokusai API key: export {KEY_ENV}=hk_live_... (or HOKUSAI_API_KEY_FILE=PATH) before "
                "starting Locust; 'hokusai-stack up' prints one for the local stack."
            )
        problem = key.format_problem()
        if problem:
            raise SettingsError(f"Malformed Hokusai API key {key} from {key.source}: {problem}.")
    return LoadConfig(settings=settings, key=key)


_configs: dict[str | None, LoadConfig] = {}


def _config_for(host: str | None) -> LoadConfig:
    """:func:`load_config` once per host (every user of a process shares it)."""
    if host not in _configs:
        _configs[host] = load_config(host)
    return _configs[host]


def _check_config(environment: Environment, runner: Runner | None = None, **_: Any) -> None:
    """Fail at start, before any user runs: a master checks settings and ``--host``; a process that
    runs users (standalone or worker) checks the key too. A problem is logged and Locust exits 1."""
    host = environment.host or HokusaiUser.host
    try:
        config = load_config(host, need_key=not isinstance(runner, MasterRunner))
    except SettingsError as exc:
        log.error("%s", exc)  # one clear line instead of a traceback; the message holds no key
        raise SystemExit(1) from None
    s = config.settings
    log.info("Hokusai load test: api %s, auth %s, tracking %s, service_id %s, timeout %gs, key %s",
             s.api_url, s.auth_url, s.tracking_uri, s.service_id, s.timeout, config.key or "(workers' own)")


events.init.add_listener(_check_config)  # type: ignore[no-untyped-call]


def _fail_unless(response: Any, ok: bool, name: str) -> bool:
    """Mark ``response`` failed (status and redacted body excerpt) unless ``ok``; return ``ok``.

    A request that got no status (connection error, timeout) is left to Locust, which reports it
    as an error with the exception.
    """
    if getattr(response, "status_code", 0) == 0:
        return False
    if not ok:
        body = excerpt(response.content, EXCERPT_CHARS) or "(empty body)"
        response.failure(f"{name}: HTTP {response.status_code}: {body}")
    return ok


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


_WEIGHTS = parse_weights(os.environ.get(WEIGHTS_ENV))


class HokusaiUser(HttpUser):
    """One client of the platform: validates its key, reads and registers through the proxy."""

    #: Default target (shown in the web UI); ``--host`` replaces it.
    host = os.environ.get("HOKUSAI_API_URL", "").strip().rstrip("/") or DEFAULT_API_URL
    wait_time = between(*parse_wait(os.environ.get(WAIT_ENV)))

    config: LoadConfig

    def on_start(self) -> None:
        self.config = _config_for(self.host)

    def _headers(self) -> dict[str, str]:
        assert self.config.key is not None  # load_config(need_key=True) guarantees it
        return {"Authorization": "Bearer " + self.config.key.reveal(), "Accept": "application/json"}

    @property
    def _timeout(self) -> float:
        return self.config.settings.timeout

    def validate(self) -> None:
        """``POST {auth}/api/v1/keys/validate`` with the key as Bearer and the service id."""
        name = "auth validate"
        with self.client.post(self.config.validate_url, json={"service_id": self.config.settings.service_id},
                              headers=self._headers(), name=name, timeout=self._timeout,
                              catch_response=True) as resp:
            body = _json(resp) if resp.status_code == 200 else None
            valid = isinstance(body, dict) and body.get("is_valid") is True
            _fail_unless(resp, valid, name)

    def read(self) -> None:
        """``GET experiments/search?max_results=1`` through the proxy."""
        name = "proxy experiments/search"
        with self.client.get(self.config.mlflow_url("experiments/search"), params={"max_results": "1"},
                             headers=self._headers(), name=name, timeout=self._timeout,
                             catch_response=True) as resp:
            _fail_unless(resp, resp.status_code == 200 and isinstance(_json(resp), dict), name)

    def register(self) -> None:
        """Create a registered model and one version through the proxy, then delete the model."""
        model = f"locust-{uuid.uuid4().hex[:16]}"
        name = "proxy register model"
        created = False
        try:
            with self.client.post(self.config.mlflow_url("registered-models/create"), json={"name": model},
                                  headers=self._headers(), name=name, timeout=self._timeout,
                                  catch_response=True) as resp:
                created = _fail_unless(resp, resp.status_code == 200, name)
            if not created:
                return
            with self.client.post(self.config.mlflow_url("model-versions/create"),
                                  json={"name": model, "source": MODEL_SOURCE},
                                  headers=self._headers(), name=name, timeout=self._timeout,
                                  catch_response=True) as resp:
                body = _json(resp) if resp.status_code == 200 else None
                _fail_unless(resp, isinstance(body, dict) and "model_version" in body, name)
        finally:
            if created:
                self._delete(model)

    def _delete(self, model: str) -> None:
        name = "proxy delete model"
        with self.client.delete(self.config.mlflow_url("registered-models/delete"), json={"name": model},
                                headers=self._headers(), name=name, timeout=self._timeout,
                                catch_response=True) as resp:
            _fail_unless(resp, resp.status_code == 200, name)

    #: Each task repeated by its HOKUSAI_LOAD_WEIGHTS weight (Locust picks uniformly from the list).
    tasks: list[TaskSet | Callable[..., Any]] = [  # noqa: RUF012 (Locust's own class attribute)
        fn for n, fn in (("validate", validate), ("read", read), ("register", register)) for _ in range(_WEIGHTS[n])
    ]
