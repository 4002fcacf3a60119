"""Well-known canary names and clean-up that never fails a check: what a run cannot remove becomes a
:class:`~pytest_hokusai.state.Leftover`, listed in every report with how to remove it.

Every check and triage probe that registers a model uses one of a small fixed set of names
(:data:`CANARY_MODELS`, plus ``hokusai-canary-concurrency-m<i>`` for the concurrency check's
separate models). A run registers *new versions* of those models, so repeated runs against a
deployment whose deletes are broken (the real proxy drops DELETE bodies, contract section 5) leave
the same few registered models behind instead of a growing pile. Each check has its own name, so
under pytest-xdist no worker deletes a model another worker is registering a version of.

Experiments keep run-unique names: MLflow deletes them with POST (which every proxy forwards) and
keeps deleted names reserved.

mlflow (and the HTTP layer, for scrubbing) is imported inside the functions that need it only, so
:mod:`.sdk` can take its canary names from here without importing requests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeGuard

from .mlflow_cleanup import delete_experiments, experiment_ids_with_names
from .state import Leftover

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .diagnosis.evidence import TriageEvidence
    from .evidence import Exchange

__all__ = [
    "CANARY_MODELS",
    "CANARY_PREFIX",
    "CANARY_SOURCE",
    "canary_name",
    "concurrency_canaries",
    "ensure_registered_model",
    "experiment_leftover",
    "is_canary",
    "model_leftover",
    "remove_registration",
    "run_leftover",
    "triage_leftovers",
]

CANARY_PREFIX = "hokusai-canary"
#: purpose -> the registered model name it uses; one per check, so xdist workers never share one.
CANARY_MODELS: dict[str, str] = {
    purpose: f"{CANARY_PREFIX}-{purpose}"
    for purpose in ("registration", "perf", "proxy", "concurrency", "triage", "readonly", "sdk", "sdk-cli")
}
#: The model-version source of versions that carry no real model (the proxy check's). Never read. An
#: s3 URI like the platform's artifact root: MLflow >= 3.1x refuses an ``mlflow-artifacts:`` source
#: unless the run that holds it comes along (3.9.0 took it); both take this one.
CANARY_SOURCE = "s3://hokusai-canary-placeholder/model"
DESCRIPTION = "pytest-hokusai canary: new versions on every run; safe to delete"
_NAME = re.compile(rf"^{CANARY_PREFIX}-[a-z]+(-[a-z]+)*(-m\d+)?$")


def canary_name(purpose: str) -> str:
    """The registered model name for ``purpose`` (a key of :data:`CANARY_MODELS`)."""
    try:
        return CANARY_MODELS[purpose]
    except KeyError:
        raise ValueError(f"no canary model for {purpose!r}; known: {', '.join(CANARY_MODELS)}") from None


def concurrency_canaries(n: int) -> list[str]:
    """The concurrency check's separate models: ``hokusai-canary-concurrency-m0`` .. ``-m<n-1>``."""
    return [f"{CANARY_MODELS['concurrency']}-m{i}" for i in range(n)]


def is_canary(name: str) -> bool:
    return bool(_NAME.match(name))


def _scrub(text: str) -> str:
    """:func:`pytest_hokusai.http.scrub` (imported here only when a leftover is described)."""
    from .http import scrub as scrub_text

    return scrub_text(text)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _short(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _scrub(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model ``name``; an existing one (a canary from an earlier run) is fine.

    Returns True when this call created it. Other errors propagate (they are the check's finding).
    """
    try:
        client.create_registered_model(name, description=DESCRIPTION)
        return True
    except Exception as exc:
        if _code(exc) == "RESOURCE_ALREADY_EXISTS":
            return False
        raise


def model_leftover(name: str, why: str, tracking_uri: str = "") -> Leftover:
    where = f"MlflowClient(tracking_uri={tracking_uri!r})" if tracking_uri else "MlflowClient()"
    return Leftover(
        kind="registered_model", name=name, why=_scrub(why),
        remove=(f"{where}.delete_registered_model({name!r}) once DELETE requests reach MLflow with their body "
                "(or from a client that reaches MLflow without the API proxy, or in the MLflow UI: Models > "
                f"{name} > Delete); later runs reuse the name, so it does not multiply"))


def experiment_leftover(name: str, why: str, tracking_uri: str = "") -> Leftover:
    where = f"MlflowClient(tracking_uri={tracking_uri!r})" if tracking_uri else "MlflowClient()"
    return Leftover(kind="experiment", name=name, why=_scrub(why),
                    remove=f"{where}.delete_experiment(<id of {name!r}>) or the MLflow UI (Experiments > Delete)")


def run_leftover(run_id: str, why: str, tracking_uri: str = "") -> Leftover:
    where = f"MlflowClient(tracking_uri={tracking_uri!r})" if tracking_uri else "MlflowClient()"
    return Leftover(kind="run", name=f"id {run_id}", why=_scrub(why),
                    remove=f"{where}.delete_run({run_id!r}) or the MLflow UI (the run's experiment > Delete)")


def remove_registration(
    client: MlflowClient,
    *,
    model: str | None = None,
    versions: Sequence[str] = (),
    model_created: bool = False,
    run_ids: Sequence[str | None] = (),
    experiment_ids: Sequence[str | None] = (),
    experiment_names: Sequence[str] = (),
) -> list[Leftover]:
    """Remove what a check registered; never raises. Returns what could not be removed.

    The versions this check created are deleted one by one, then the model if no version is left
    (another run may be registering into the same canary: its versions are not ours to delete). A
    model this check neither created (``model_created``) nor added a version to is left alone, so a
    registration refused before anything was made (a read-only key) leaves no false leftover.
    Runs are deleted by id (a run outside the experiments given, e.g. one the SDK's CLI made).
    Experiments are deleted by id, or looked up by name when the creating call failed late.
    """
    uri = str(getattr(client, "tracking_uri", "") or "")
    left: list[Leftover] = []
    if model:
        failed_versions: dict[str, list[str]] = {}  # one line per distinct error, with the versions it hit
        for version in versions:
            try:
                client.delete_model_version(model, str(version))
            except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
                if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    failed_versions.setdefault(_short(exc), []).append(str(version))
        problems = [f"delete version{'s' if len(hit) > 1 else ''} {', '.join(hit)}: {error}"
                    for error, hit in failed_versions.items()]
        if not problems and (versions or model_created):
            try:
                remaining = list(client.search_model_versions(f"name='{model}'"))
                if not remaining:
                    client.delete_registered_model(model)
            except Exception as exc:  # noqa: BLE001
                if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    problems.append(f"delete the registered model: {_short(exc)}")
        if problems:
            left.append(model_leftover(model, "; ".join(problems), uri))
    for run_id in (str(i) for i in run_ids if i):
        try:
            client.delete_run(run_id)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
                left.append(run_leftover(run_id, _short(exc), uri))
    # A failed lookup is not reported: whether the experiment exists is unknown, no leftover on a guess.
    ids, _ = experiment_ids_with_names(client, experiment_ids, experiment_names)
    for experiment_id, failure in delete_experiments(client, ids):
        left.append(experiment_leftover(f"id {experiment_id}", _short(failure), uri))
    return left


def triage_leftovers(evidence: TriageEvidence) -> list[Leftover]:
    """What the triage's write probes created and could not remove (from their recorded answers)."""
    from .diagnosis import evidence as ev
    from .diagnosis import tells as t

    left: list[Leftover] = []

    def failed(ex: Exchange | None) -> TypeGuard[Exchange]:
        return ex is not None and not ex.ok and not t.body_has(ex, "RESOURCE_DOES_NOT_EXIST")

    created, deleted = evidence.probe(ev.MODEL_CREATE), evidence.probe(ev.MODEL_DELETE)
    if created is not None and created.ok and failed(deleted):
        left.append(model_leftover(canary_name("triage"), f"{deleted.method} {t.path_of(deleted.url)} -> "
                                   f"{deleted.status} {t.detail(deleted, 160)}", evidence.tracking_uri))
    created, deleted = evidence.probe(ev.EXPERIMENT_CREATE), evidence.probe(ev.EXPERIMENT_DELETE)
    if created is not None and created.ok and failed(deleted):
        left.append(experiment_leftover("hokusai-triage-*", f"POST experiments/delete -> {deleted.status} "
                                        f"{t.detail(deleted, 160)}", evidence.tracking_uri))
    put, removed = evidence.probe(ev.ARTIFACT_PUT), evidence.probe(ev.ARTIFACT_DELETE)
    if put is not None and put.ok and failed(removed):
        left.append(Leftover(kind="artifact", name=t.path_of(put.url).rsplit("/artifacts/", 1)[-1],
                             why=f"DELETE -> {removed.status} {t.detail(removed, 160)}",
                             remove="delete it from the artifact store (mlflow-artifacts root, hokusai-triage/)"))
    return left
