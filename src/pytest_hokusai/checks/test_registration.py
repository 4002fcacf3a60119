"""The third-party flow end to end: experiment, run, log_model, register, verify, load back."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.live, pytest.mark.hokusai_registration]


def test_register_model_end_to_end(hokusai_mlflow_client, hokusai_toy_model, hokusai_unique_name,
                                   hokusai_settings, hokusai_measure):
    from ..registry import cleanup, register_toy_model

    name = hokusai_unique_name("hokusai-check-model")
    experiment = hokusai_unique_name("hokusai-check-exp")
    started = time.monotonic()
    registration = None
    try:
        registration = register_toy_model(hokusai_mlflow_client, hokusai_toy_model, name=name,
                                          experiment_name=experiment)
        hokusai_measure("registration_s", time.monotonic() - started)
        for phase, seconds in registration.timings.items():
            hokusai_measure(f"registration_{phase}_s", seconds)
        assert registration.version, "the registry returned no model version"
        assert registration.predictions_match, "the model loaded back predicts differently"
    finally:
        if not hokusai_settings.keep:
            problems = cleanup(hokusai_mlflow_client, model_names=[name],
                               experiment_ids=[registration.experiment_id] if registration and registration.experiment_id else [],
                               experiment_names=[experiment])
            assert not problems, f"cleanup failed: {problems}"


def test_artifact_roundtrip_through_proxy(hokusai_mlflow_client, hokusai_unique_name, hokusai_settings, tmp_path):
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
            hokusai_mlflow_client.delete_experiment(experiment_id)
