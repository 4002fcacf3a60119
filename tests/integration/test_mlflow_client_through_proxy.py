"""The stock MLflow client registers a model through the local stack's authenticating proxy.

The client runs in a subprocess with exactly the environment a third party is told to use
(``MLFLOW_TRACKING_URI={api}/api/mlflow``, ``MLFLOW_TRACKING_TOKEN=<key>``), plus no retries and
a short timeout so that a failure surfaces at once. The key travels only in that environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from pytest_hokusai.secret import Secret, redact
from pytest_hokusai.stack.launcher import Stack

ROUND_TRIP = r'''
import json, sys
import numpy as np
import mlflow
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

name = sys.argv[1]
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0], [1.0, 2.0]])
y = np.array([0, 0, 0, 1, 1, 1])
model = LogisticRegression().fit(X, y)
client = mlflow.MlflowClient()
experiment_id = mlflow.create_experiment(name)
with mlflow.start_run(experiment_id=experiment_id) as run:
    mlflow.log_param("C", 1.0)
    mlflow.log_metric("train_accuracy", float((model.predict(X) == y).mean()))
    info = mlflow.sklearn.log_model(
        model, name="model", signature=infer_signature(X, model.predict(X)),
        pip_requirements=["scikit-learn", "numpy"], registered_model_name=name,
    )
version = info.registered_model_version
loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
same = bool((np.asarray(loaded.predict(X)) == model.predict(X)).all())
client.delete_registered_model(name)
client.delete_experiment(experiment_id)
deleted = client.get_experiment(experiment_id).lifecycle_stage
print(json.dumps({"run_id": run.info.run_id, "version": str(version), "same_predictions": same,
                  "experiment_stage": deleted}))
'''

WITHOUT_TOKEN = r'''
import mlflow
try:
    mlflow.MlflowClient().search_experiments(max_results=1)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
else:
    print("NO ERROR")
'''


def run_client(stack: Stack, script: str, *args: str, key: Secret | None, tmp_path: Path,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
    env.update({
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        "HOME": str(tmp_path),  # nothing of the user's MLflow config, nothing left in theirs
        "PYTHONWARNINGS": "ignore",
    })
    if key is not None:
        env["MLFLOW_TRACKING_TOKEN"] = key.reveal()
    return subprocess.run([sys.executable, "-c", script, *args], check=False, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=timeout)


def test_stock_client_registers_and_loads_a_model_through_the_proxy(stack: Stack, tmp_path: Path) -> None:
    key = stack.mint_key(scopes=("read", "write"), name="mlflow client round trip")
    name = f"hokusai-stack-roundtrip-{uuid.uuid4().hex[:8]}"
    done = run_client(stack, ROUND_TRIP, name, key=key, tmp_path=tmp_path)
    output = redact(done.stdout + done.stderr)
    assert done.returncode == 0, output[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == "1"
    assert result["same_predictions"] is True
    assert result["experiment_stage"] == "deleted"
    assert key.reveal() not in done.stdout + done.stderr


def test_client_without_a_token_gets_api_key_required(stack: Stack, tmp_path: Path) -> None:
    done = run_client(stack, WITHOUT_TOKEN, key=None, tmp_path=tmp_path, timeout=60)
    assert done.returncode == 0, redact(done.stderr)[-2000:]
    # MLflow wraps a non-MLflow error body as INTERNAL_ERROR; the proxy's words come through
    assert "API key required" in done.stdout
    assert "NO ERROR" not in done.stdout
