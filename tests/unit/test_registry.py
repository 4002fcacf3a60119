"""registry.py: the scoped MLflow environment, names, the toy model, the registration flow against a
local SQLite store, and recording of the MLflow client's HTTP against a loopback imitation."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from pytest_hokusai.evidence import Recorder
from pytest_hokusai.registry import (
    MLFLOW_ENV_VARS,
    REGISTRATION_STEPS,
    RegistrationStepError,
    ToyModel,
    cleanup,
    make_client,
    mlflow_env,
    record_mlflow_http,
    register_toy_model,
    train_toy_model,
    unique_name,
)
from pytest_hokusai.secret import Secret

RAW_KEY = "hk_live_" + "M9" * 14 + "wxyz"
MASKED = "hk_live_\u2026wxyz"


@pytest.fixture
def key() -> Secret:
    return Secret(RAW_KEY, source="test")


@pytest.fixture(scope="module")
def toy() -> ToyModel:
    return train_toy_model(seed=0)


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty directory, so a stray default store (./mlflow.db, ./mlruns) shows up here."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A local SQLite tracking store and a file artifact root (no server), shared by the module's
    tests (creating the schema costs seconds; every test uses unique names)."""
    root = tmp_path_factory.mktemp("store")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def snapshot() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in MLFLOW_ENV_VARS}


# -- mlflow_env ------------------------------------------------------------------------------------
def test_mlflow_env_sets_and_restores_exactly(monkeypatch: pytest.MonkeyPatch, key: Secret) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere.invalid")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_REGISTRY_URI", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    before = snapshot()
    uri_before = mlflow.get_tracking_uri()
    with mlflow_env("http://127.0.0.1:9/api/mlflow", key, max_retries=1, request_timeout=2.5):
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9/api/mlflow"
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == key.reveal()
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"  # MLflow parses an int
        assert "MLFLOW_TRACKING_USERNAME" not in os.environ
        assert mlflow.get_tracking_uri() == "http://127.0.0.1:9/api/mlflow"
        assert mlflow.get_registry_uri() == "http://127.0.0.1:9/api/mlflow"
    assert snapshot() == before
    assert mlflow.get_tracking_uri() == uri_before


def test_mlflow_env_restores_after_an_error(monkeypatch: pytest.MonkeyPatch, key: Secret) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    before = snapshot()
    with pytest.raises(RuntimeError), mlflow_env("http://127.0.0.1:9", key):
        raise RuntimeError("inside")
    assert snapshot() == before
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


def test_mlflow_env_without_key_sets_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "left-over")
    with mlflow_env("http://127.0.0.1:9", None):
        assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "left-over"


# -- names -----------------------------------------------------------------------------------------
def test_unique_name_is_unique_and_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    names = {unique_name("hokusai check/model") for _ in range(500)}
    assert len(names) == 500
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
        assert name.startswith("hokusai-check-model-gw3-")
        assert f"-{os.getpid()}-" in name
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert "-main-" in unique_name("x")


# -- the toy model ---------------------------------------------------------------------------------
def test_toy_model_is_deterministic(toy: ToyModel) -> None:
    import numpy as np

    again = train_toy_model(seed=0)
    other = train_toy_model(seed=1)
    assert np.array_equal(toy.predictions, again.predictions)
    assert np.array_equal(toy.model.coef_, again.model.coef_)
    assert toy.X.equals(again.X)
    assert not toy.X.equals(other.X)
    assert list(toy.X.columns) == ["f0", "f1", "f2", "f3"]
    assert set(np.unique(toy.y)) == {0, 1}
    assert 0.7 <= toy.metrics["accuracy"] <= 1.0
    assert toy.params["seed"] == "0" and toy.signature.inputs is not None


# -- the registration flow against a local store ---------------------------------------------------
def test_register_and_cleanup(store: tuple[str, str], toy: ToyModel, elsewhere: Path) -> None:
    tracking_uri, artifacts = store
    client = make_client(tracking_uri)
    name, experiment = unique_name("unit-model"), unique_name("unit-exp")
    created: list[Any] = []
    reg = register_toy_model(client, toy, name, experiment, artifact_location=artifacts,
                             ready_timeout=10, on_created=lambda r: created.append(r.experiment_id))
    assert list(reg.timings) == list(REGISTRATION_STEPS)
    assert all(seconds >= 0 for seconds in reg.timings.values())
    assert reg.version == "1" and reg.name == name and reg.predictions_match is True
    assert reg.model_uri and reg.model_uri.startswith("models:/")
    experiment_id, run_id = reg.experiment_id, reg.run_id
    assert experiment_id and run_id
    assert created and created[0] == experiment_id
    assert client.get_model_version(name, "1").status == "READY"
    assert client.get_run(run_id).data.params["seed"] == "0"
    assert list(elsewhere.iterdir()) == [], "the flow used mlflow's default store instead of the client's"

    assert cleanup(client, model_names=[name], experiment_ids=[experiment_id]) == []
    assert client.search_registered_models(filter_string=f"name='{name}'") == []
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    # idempotent: already gone is not a problem
    assert cleanup(client, model_names=[name], experiment_ids=[experiment_id],
                   experiment_names=[experiment]) == []


def test_cleanup_by_experiment_name(store: tuple[str, str]) -> None:
    client = make_client(store[0])
    name = unique_name("unit-exp")
    experiment_id = client.create_experiment(name, artifact_location=store[1])
    assert cleanup(client, experiment_names=[name]) == []
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"


def test_cleanup_never_raises(store: tuple[str, str]) -> None:
    client = make_client(store[0])
    problems = cleanup(client, experiment_ids=["not-a-number"])
    assert len(problems) == 1 and problems[0].startswith("delete experiment not-a-number:")


def test_failed_step_is_named(store: tuple[str, str], toy: ToyModel) -> None:
    client = make_client(store[0])
    experiment = unique_name("unit-exp")
    client.create_experiment(experiment, artifact_location=store[1])
    with pytest.raises(RegistrationStepError) as info:
        register_toy_model(client, toy, unique_name("m"), experiment, artifact_location=store[1])
    assert info.value.step == "experiment"
    assert str(info.value).startswith("experiment failed: MlflowException:")
    assert info.value.partial.experiment_id is None


def test_log_model_failure_keeps_what_was_created(store: tuple[str, str], toy: ToyModel, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the artifact root should be")
    client = make_client(store[0])
    with pytest.raises(RegistrationStepError) as info:
        register_toy_model(client, toy, unique_name("m"), unique_name("e"), artifact_location=blocker.as_uri())
    assert info.value.step == "log_model"
    assert str(info.value).startswith("log_model failed: ")
    partial = info.value.partial
    assert partial.experiment_id and partial.run_id and partial.version is None
    assert set(partial.timings) == {"experiment", "run", "log_model"}
    assert cleanup(client, experiment_ids=[partial.experiment_id]) == []


# -- recording the MLflow client's HTTP ------------------------------------------------------------
SEARCH = "/api/2.0/mlflow/experiments/search"


def test_record_mlflow_http(httpserver: HTTPServer, key: Secret) -> None:
    from mlflow.utils import rest_utils

    original = rest_utils.http_request
    httpserver.expect_request(SEARCH).respond_with_json({"experiments": []})
    recorder = Recorder()
    base = httpserver.url_for("/").rstrip("/")
    with mlflow_env(base, key, max_retries=0, request_timeout=5), record_mlflow_http(recorder):
        assert rest_utils.http_request is not original
        experiments = make_client(base).search_experiments(max_results=3)
    assert list(experiments) == []
    assert rest_utils.http_request is original
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"] == f"Bearer {RAW_KEY}"
    [exchange] = [e for e in recorder.all() if SEARCH in e.url]
    assert exchange.label == "mlflow-client" and exchange.status == 200
    assert exchange.auth == f"Bearer {MASKED}"
    assert exchange.url.startswith(base + SEARCH)
    assert json.loads(exchange.body_excerpt) == {"experiments": []}
    assert exchange.elapsed_ms > 0
    assert RAW_KEY not in json.dumps([e.to_dict() for e in recorder.all()])


def test_record_mlflow_http_errors(httpserver: HTTPServer, key: Secret) -> None:
    from mlflow.exceptions import MlflowException

    httpserver.expect_request(SEARCH).respond_with_json({"detail": "Authentication service error"}, status=503)
    recorder = Recorder()
    base = httpserver.url_for("/").rstrip("/")
    with mlflow_env(base, key, max_retries=0, request_timeout=5), record_mlflow_http(recorder), \
            pytest.raises(MlflowException):
        make_client(base).search_experiments()
    [exchange] = [e for e in recorder.all() if SEARCH in e.url]
    assert exchange.status == 503 and exchange.error is None
    assert exchange.error_detail and "503" in exchange.error_detail

    httpserver.clear()
    httpserver.expect_request(SEARCH).respond_with_json({"detail": "API key required"}, status=401)
    with mlflow_env(base, None, max_retries=0, request_timeout=5), record_mlflow_http(recorder), \
            pytest.raises(MlflowException, match="API key required"):
        make_client(base).search_experiments()
    last = recorder.all()[-1]
    assert last.status == 401 and last.auth == "none" and "API key required" in last.body_excerpt


def test_record_mlflow_http_unreachable(key: Secret) -> None:
    import socket

    from mlflow.exceptions import MlflowException

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    recorder = Recorder()
    with mlflow_env(base, key, max_retries=0, request_timeout=2), record_mlflow_http(recorder), \
            pytest.raises(MlflowException):
        make_client(base).search_experiments()
    [exchange] = recorder.all()
    assert exchange.status is None and exchange.error == "refused"


def test_record_mlflow_http_nests_and_restores(httpserver: HTTPServer, key: Secret) -> None:
    from mlflow.utils import rest_utils

    original = rest_utils.http_request
    httpserver.expect_request(SEARCH).respond_with_json({"experiments": []})
    outer, inner = Recorder(), Recorder()
    base = httpserver.url_for("/").rstrip("/")
    with mlflow_env(base, key), record_mlflow_http(outer):
        with record_mlflow_http(inner):
            make_client(base).search_experiments()
        assert rest_utils.http_request is not original
        make_client(base).search_experiments()
    assert rest_utils.http_request is original
    assert len([e for e in inner.all() if SEARCH in e.url]) == 1
    assert len([e for e in outer.all() if SEARCH in e.url]) == 2


def test_scoped_environ_sets_removes_and_restores_exactly(monkeypatch):
    from pytest_hokusai.mlflow_config import scoped_environ
    from pytest_hokusai.secret import Secret

    monkeypatch.setenv("HK_TEST_KEEP", "before")
    monkeypatch.setenv("HK_TEST_GONE", "present")
    monkeypatch.delenv("HK_TEST_NEW", raising=False)
    monkeypatch.delenv("HK_TEST_TOUCHED", raising=False)
    with scoped_environ({"HK_TEST_NEW": Secret("hk_live_" + "Q" * 32, source="test"), "HK_TEST_GONE": None,
                         "HK_TEST_KEEP": "during"}, restore=["HK_TEST_TOUCHED"]):
        assert os.environ["HK_TEST_NEW"] == "hk_live_" + "Q" * 32  # written revealed
        assert "HK_TEST_GONE" not in os.environ and os.environ["HK_TEST_KEEP"] == "during"
        os.environ["HK_TEST_TOUCHED"] = "by the block"  # e.g. the SDK writing a variable
    assert "HK_TEST_NEW" not in os.environ and "HK_TEST_TOUCHED" not in os.environ
    assert os.environ["HK_TEST_GONE"] == "present" and os.environ["HK_TEST_KEEP"] == "before"
