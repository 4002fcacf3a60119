"""The MLflow side: a scoped client configuration, a toy model, and the register / verify / clean up
flow a third party goes through, step by step, with the failing step named.

mlflow, scikit-learn, numpy and pandas are imported inside the functions that need them only,
so importing this module is cheap.

* :func:`mlflow_env` points the stock MLflow client at a tracking URI with the key as
  ``MLFLOW_TRACKING_TOKEN`` (what third parties are told to do, contract section 0), with few
  retries and a short timeout so a 503 surfaces in seconds rather than minutes (section 8), and
  restores the environment exactly afterwards.
* :func:`register_toy_model` runs experiment → run → log_model → register → wait READY → search →
  load → predict, timing each phase; a failure raises :class:`RegistrationStepError` naming the step.
* :func:`record_mlflow_http` records every REST call the MLflow client makes as evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .errors import HokusaiError
from .evidence import Exchange, Recorder, clean_url, excerpt, request_body_shape
from .http import EXCERPT_BYTES, RECORDED_HEADERS, classify_error, scrub
from .secret import Secret, mask

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MLFLOW_ENV_VARS",
    "PIP_REQUIREMENTS",
    "REGISTRATION_STEPS",
    "Registration",
    "RegistrationStepError",
    "ToyModel",
    "cleanup",
    "make_client",
    "mlflow_env",
    "record_mlflow_http",
    "register_toy_model",
    "train_toy_model",
    "unique_name",
]

#: Environment variables :func:`mlflow_env` sets or clears (and restores afterwards).
MLFLOW_ENV_VARS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_REGISTRY_URI",
    "MLFLOW_DISABLE_TELEMETRY",
)
#: The phases :func:`register_toy_model` times and may report as failed, in order.
REGISTRATION_STEPS = ("experiment", "run", "log_model", "register", "search", "load", "predict")
MLFLOW_LABEL = "mlflow-client"


def _pinned(dist: str, fallback: str) -> str:
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return fallback


#: Explicit requirements for the logged toy model, so ``log_model`` does not infer them (slow, noisy).
PIP_REQUIREMENTS: list[str] = [
    _pinned("scikit-learn", "scikit-learn"),
    _pinned("numpy", "numpy"),
    _pinned("pandas", "pandas"),
    _pinned("cloudpickle", "cloudpickle"),
]

_env_lock = threading.RLock()


# -- scoped client configuration ------------------------------------------------------------------
@contextmanager
def _fluent_uris(tracking_uri: str) -> Iterator[None]:
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


# -- names ----------------------------------------------------------------------------------------
_counter = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def unique_name(prefix: str = "hokusai-check") -> str:
    """A run-unique, xdist-safe MLflow name: ``<prefix>-<worker>-<pid>-<utc time>-<n>-<random>``.

    Only letters, digits, ``-`` and ``_`` (safe in filter strings, URIs and paths).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    raw = f"{prefix}-{worker}-{os.getpid()}-{stamp}-{next(_counter)}-{secrets.token_hex(3)}"
    return _UNSAFE.sub("-", raw).strip("-")[:200]


# -- the toy model --------------------------------------------------------------------------------
@dataclass
class ToyModel:
    """A small fitted scikit-learn classifier with its data, predictions and MLflow signature."""

    model: Any  #: sklearn LogisticRegression
    X: Any  #: pandas DataFrame, columns f0..f3
    y: Any  #: numpy int array
    predictions: Any  #: numpy int array, model.predict(X)
    signature: Any  #: mlflow.models.ModelSignature
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def train_toy_model(seed: int = 0, *, rows: int = 64) -> ToyModel:
    """Fit a LogisticRegression on generated data (deterministic for a given ``seed``)."""
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(seed)
    features = rng.normal(size=(rows, 4))
    weights = np.array([1.5, -2.0, 0.5, 1.0])
    y = ((features @ weights + rng.normal(scale=0.5, size=rows)) > 0).astype(np.int64)
    X = pd.DataFrame(features, columns=[f"f{i}" for i in range(4)])
    params = {"C": 1.0, "max_iter": 200}
    model = LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=seed)
    model.fit(X, y)
    predictions = model.predict(X)
    signature = infer_signature(X, predictions)
    accuracy = float((predictions == y).mean())
    return ToyModel(
        model=model, X=X, y=y, predictions=predictions, signature=signature,
        metrics={"accuracy": accuracy, "rows": float(rows)},
        params={"C": str(params["C"]), "max_iter": str(params["max_iter"]), "seed": str(seed),
                "model": "LogisticRegression"},
    )


# -- registration ---------------------------------------------------------------------------------
@dataclass
class Registration:
    """What :func:`register_toy_model` created, and how long each phase took (seconds)."""

    experiment_id: str | None = None
    run_id: str | None = None
    model_uri: str | None = None
    name: str | None = None
    version: str | None = None
    #: whether the model loaded back from the registry predicts exactly as trained (None: not checked)
    predictions_match: bool | None = None
    #: whether this flow created the registered model (False: a canary from an earlier run got a version)
    model_created: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return round(sum(self.timings.values()), 3)


class RegistrationStepError(HokusaiError):
    """One step of the registration flow failed; ``step`` names it, ``cause`` is the original error
    and ``partial`` holds what was created before (for clean-up)."""

    def __init__(self, step: str, cause: BaseException, partial: Registration) -> None:
        self.step = step
        self.cause = cause
        self.partial = partial
        text = " ".join(str(cause).split()) or type(cause).__name__
        if len(text) > 600:
            text = text[:599] + "\u2026"
        super().__init__(scrub(f"{step} failed: {type(cause).__name__}: {text}"))


@contextmanager
def _step(name: str, reg: Registration) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    except RegistrationStepError:
        raise
    except Exception as exc:
        raise RegistrationStepError(name, exc, reg) from exc
    finally:
        reg.timings[name] = round(reg.timings.get(name, 0.0) + time.monotonic() - started, 4)


def register_toy_model(
    client: MlflowClient,
    toy: ToyModel,
    name: str,
    experiment_name: str,
    *,
    artifact_location: str | None = None,
    ready_timeout: float = 60.0,
    artifact_name: str = "model",
    on_created: Callable[[Registration], None] | None = None,
) -> Registration:
    """Register ``toy`` as model ``name`` through ``client``'s tracking URI, verifying each step.

    Steps (each timed in ``Registration.timings``): ``experiment`` (create), ``run`` (create, log
    params and metrics), ``log_model`` (``mlflow.sklearn.log_model``; artifacts go through the
    tracking server or proxy), ``register`` (create the registered model and a version, then
    wait for READY up to ``ready_timeout`` s), ``search`` (``search_registered_models`` by name),
    ``load`` (``models:/<name>/<version>``) and ``predict`` (same predictions as the toy).

    Raises :class:`RegistrationStepError` (``.step``, ``.cause``, ``.partial``) on the first
    failure. ``on_created`` is called with the partial registration after each step that
    creates something, so a caller can schedule clean-up even if a later step fails.
    """
    import mlflow
    import numpy as np
    from mlflow.entities import Metric, Param

    reg = Registration(name=name)
    tracking_uri = client.tracking_uri

    def created() -> None:
        if on_created is not None:
            on_created(reg)

    # The fluent API (start_run, log_model, load_model) and local stores resolving models:/ URIs use
    # mlflow's process-global URIs: point them at the client's for the whole flow.
    with _fluent_uris(tracking_uri):
        with _step("experiment", reg):
            reg.experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location)
        created()

        with _step("run", reg):
            run = client.create_run(reg.experiment_id, tags={"hokusai.check": "registration"})
            reg.run_id = run.info.run_id
            now = int(time.time() * 1000)
            client.log_batch(
                reg.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in toy.metrics.items()],
                params=[Param(k, str(v)) for k, v in toy.params.items()],  # type: ignore[no-untyped-call,unused-ignore]
            )
        created()

        with _step("log_model", reg), mlflow.start_run(run_id=reg.run_id):
            info = mlflow.sklearn.log_model(
                toy.model, name=artifact_name, signature=toy.signature, pip_requirements=PIP_REQUIREMENTS,
            )
            reg.model_uri = info.model_uri

        with _step("register", reg):
            # A canary name (pytest_hokusai.canary) may exist from an earlier run: a new version of it.
            from .canary import ensure_registered_model

            reg.model_created = ensure_registered_model(client, name)
            created()
            try:
                version = client.create_model_version(
                    name, source=reg.model_uri, run_id=reg.run_id, model_id=getattr(info, "model_id", None),
                    await_creation_for=0,
                )
            except Exception as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                # another run removed the (empty) canary between our two calls: register it again
                reg.model_created = ensure_registered_model(client, name) or reg.model_created
                version = client.create_model_version(
                    name, source=reg.model_uri, run_id=reg.run_id, model_id=getattr(info, "model_id", None),
                    await_creation_for=0,
                )
            reg.version = str(version.version)
            _wait_ready(client, name, reg.version, ready_timeout)

        with _step("search", reg):
            found = client.search_registered_models(filter_string=f"name='{name}'")
            names = [m.name for m in found]
            if name not in names:
                raise LookupError(f"search_registered_models(name='{name}') returned {names or 'nothing'}")

        with _step("load", reg):
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{reg.version}")

        with _step("predict", reg):
            predicted = np.asarray(loaded.predict(toy.X))
            reg.predictions_match = bool(np.array_equal(predicted, np.asarray(toy.predictions)))
            if not reg.predictions_match:
                differing = int((predicted != np.asarray(toy.predictions)).sum())
                raise AssertionError(f"the loaded model's predictions differ from the trained model's "
                                     f"on {differing} of {len(predicted)} rows")
        return reg


def _wait_ready(client: MlflowClient, name: str, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        mv = client.get_model_version(name, version)
        status = str(mv.status)
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise RuntimeError(f"model version {name}/{version} is FAILED_REGISTRATION: "
                               f"{getattr(mv, 'status_message', '') or 'no message'}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"model version {name}/{version} still {status} after {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def cleanup(
    client: MlflowClient,
    *,
    model_names: Sequence[str] = (),
    experiment_ids: Sequence[str] = (),
    experiment_names: Sequence[str] = (),
) -> list[str]:
    """Delete registered models (with their versions) and experiments (by id, or by name when the
    id is unknown, e.g. the creating call failed after the server acted); never raises.

    Returns one redacted line per problem (an empty list: all deleted, already gone or never made).
    """
    problems: list[str] = []
    ids = [str(i) for i in experiment_ids if i]
    for name in experiment_names:
        try:
            experiment = client.get_experiment_by_name(name)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not _is_not_found(exc):
                problems.append(scrub(f"look up experiment {name!r}: {_short(exc)}"))
            continue
        if experiment is not None and experiment.lifecycle_stage != "deleted" and experiment.experiment_id not in ids:
            ids.append(experiment.experiment_id)
    for name in model_names:
        try:
            client.delete_registered_model(name)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not _is_not_found(exc):
                problems.append(scrub(f"delete registered model {name!r}: {_short(exc)}"))
    for experiment_id in ids:
        try:
            client.delete_experiment(experiment_id)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not _is_not_found(exc):
                problems.append(scrub(f"delete experiment {experiment_id}: {_short(exc)}"))
    return problems


def _is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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
