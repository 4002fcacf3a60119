"""The MLflow side: the register / verify / clean up flow a third party goes through, step by step,
with the failing step named. The scoped client configuration is in :mod:`.mlflow_config`, the toy
model in :mod:`.toy_model`, the HTTP recording in :mod:`.mlflow_http`; their public names stay
importable from here.

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

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import HokusaiError
from .http import scrub
from .mlflow_cleanup import delete_experiments, experiment_ids_with_names, is_not_found
from .mlflow_config import MLFLOW_ENV_VARS, fluent_uris, make_client, mlflow_env
from .mlflow_http import MLFLOW_LABEL, record_mlflow_http
from .toy_model import PIP_REQUIREMENTS, ToyModel, train_toy_model

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MLFLOW_ENV_VARS",
    "MLFLOW_LABEL",
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

#: The phases :func:`register_toy_model` times and may report as failed, in order.
REGISTRATION_STEPS = ("experiment", "run", "log_model", "register", "search", "load", "predict")


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
    with fluent_uris(tracking_uri):
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
    ids, lookups = experiment_ids_with_names(client, experiment_ids, experiment_names)
    problems.extend(scrub(f"look up experiment {name!r}: {_short(failure)}") for name, failure in lookups)
    for name in model_names:
        try:
            client.delete_registered_model(name)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not is_not_found(exc):
                problems.append(scrub(f"delete registered model {name!r}: {_short(exc)}"))
    problems.extend(scrub(f"delete experiment {experiment_id}: {_short(failure)}")
                    for experiment_id, failure in delete_experiments(client, ids))
    return problems


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


