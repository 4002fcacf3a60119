"""The third-party flow end to end: experiment, run, log_model, register, verify, load back."""

from __future__ import annotations

import time

import pytest

from ._support import HOST_SAFE_FILTERS, keep_leftovers

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_registration, *HOST_SAFE_FILTERS]


def test_register_model_end_to_end(hokusai_mlflow_client, hokusai_toy_model, hokusai_unique_name,
                                   hokusai_settings, hokusai_measure, hokusai_run):
    from ..canary import canary_name, remove_registration
    from ..registry import register_toy_model

    # A new version of the well-known canary model: broken deletes leave one model behind, not a pile.
    name = canary_name("registration")
    experiment = hokusai_unique_name("hokusai-check-exp")
    started = time.monotonic()
    registration = None
    partial = None
    try:
        registration = register_toy_model(hokusai_mlflow_client, hokusai_toy_model, name=name,
                                          experiment_name=experiment)
        hokusai_measure("registration_s", time.monotonic() - started)
        for phase, seconds in registration.timings.items():
            hokusai_measure(f"registration_{phase}_s", seconds)
        assert registration.version, "the registry returned no model version"
        assert registration.predictions_match, "the model loaded back predicts differently"
    except Exception as exc:
        partial = getattr(exc, "partial", None)  # RegistrationStepError: what was made before the step
        raise
    finally:
        # Clean-up judges nothing: what it cannot remove is a leftover in the reports, never a failure.
        made = registration or partial
        if not hokusai_settings.keep:
            keep_leftovers(hokusai_run, remove_registration(
                hokusai_mlflow_client, model=name, versions=[made.version] if made and made.version else [],
                model_created=bool(made and made.model_created),
                experiment_ids=[made.experiment_id] if made and made.experiment_id else [],
                experiment_names=[experiment]))


def test_artifact_roundtrip_through_proxy(hokusai_mlflow_client, hokusai_unique_name, hokusai_settings, tmp_path,
                                          hokusai_run):
    from ..canary import remove_registration

    experiment_id = hokusai_mlflow_client.create_experiment(hokusai_unique_name("hokusai-check-artifacts"))
    try:
        run = hokusai_mlflow_client.create_run(experiment_id)
        payload = tmp_path / "payload.txt"
        payload.write_text("hokusai artifact round trip\n" * 100)
        hokusai_mlflow_client.log_artifact(run.info.run_id, str(payload))
        listed = [f.path for f in hokusai_mlflow_client.list_artifacts(run.info.run_id)]
        assert "payload.txt" in listed, f"artifact not listed after upload: {listed}"
        (tmp_path / "down").mkdir()
        local = hokusai_mlflow_client.download_artifacts(run.info.run_id, "payload.txt", str(tmp_path / "down"))
        with open(local, encoding="utf-8") as fh:
            assert fh.read() == payload.read_text(), "the downloaded artifact differs from the upload"
        hokusai_mlflow_client.set_terminated(run.info.run_id)
    finally:
        if not hokusai_settings.keep:
            keep_leftovers(hokusai_run, remove_registration(hokusai_mlflow_client, experiment_ids=[experiment_id]))
