"""Deleting MLflow experiments after a check: the lookup-by-name and delete-by-id loops that
:func:`.registry.cleanup` and :func:`.canary.remove_registration` share.

Both callers word and report the failures their own way, so these helpers only return them. An
experiment that does not exist (``RESOURCE_DOES_NOT_EXIST``) is not a failure: it is already gone.
Imports nothing heavy (canary.py is imported by the plugin).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["delete_experiments", "experiment_ids_with_names", "is_not_found"]


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says the resource does not exist."""
    return str(getattr(exc, "error_code", "") or "") == "RESOURCE_DOES_NOT_EXIST"


def experiment_ids_with_names(
    client: MlflowClient, experiment_ids: Sequence[str | None], experiment_names: Sequence[str]
) -> tuple[list[str], list[tuple[str, BaseException]]]:
    """The ids given plus those of the named experiments that are not deleted already.

    A name is looked up when its creating call failed late (the server may have acted). Returns
    ``(ids, failures)``, ``failures`` being ``(name, exception)`` for lookups that failed other
    than "not found" (whether the experiment exists is then unknown).
    """
    ids = [str(i) for i in experiment_ids if i]
    failures: list[tuple[str, BaseException]] = []
    for name in experiment_names:
        try:
            experiment = client.get_experiment_by_name(name)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not is_not_found(exc):
                failures.append((name, exc))
            continue
        if experiment is not None and experiment.lifecycle_stage != "deleted" and experiment.experiment_id not in ids:
            ids.append(experiment.experiment_id)
    return ids, failures


def delete_experiments(client: MlflowClient, experiment_ids: Sequence[str]) -> list[tuple[str, BaseException]]:
    """Delete each experiment; never raises. Returns ``(id, exception)`` for each that failed."""
    failures: list[tuple[str, BaseException]] = []
    for experiment_id in experiment_ids:
        try:
            client.delete_experiment(experiment_id)
        except Exception as exc:  # noqa: BLE001  # clean-up reports, never raises
            if not is_not_found(exc):
                failures.append((experiment_id, exc))
    return failures
