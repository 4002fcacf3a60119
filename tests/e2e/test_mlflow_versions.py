"""The platform's MLflow server beside the user's client: the registration checks run with this
environment's (newest) MLflow client against the stack's MLflow server run from another environment
that holds the platform's MLflow 3.9.0 (contract section 5).

That environment is built once and cached (``tests/support/mlflow_env.py``); the first run takes a
minute or two more.
"""

from __future__ import annotations

import json

import pytest

from pytest_hokusai.client_version import mlflow_client_version
from tests.support.mlflow_env import PLATFORM_MLFLOW, mlflow_server_python

from .conftest import PYTEST_INI, SUBPROCESS_TIMEOUT_S

pytestmark = pytest.mark.slow


def test_newest_client_registers_against_the_platforms_mlflow_server(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    python = mlflow_server_python(PLATFORM_MLFLOW)
    for name in ("HOKUSAI_STACK_MLFLOW_PYTHON", "HOKUSAI_STACK_FAULTS", "HOKUSAI_TARGET", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    pytester.makefile(".ini", pytest=PYTEST_INI)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_hokusai.checks", "-m", "live and hokusai_registration",
        "--hokusai-target=local", f"--hokusai-stack-mlflow-python={python}",
        f"--hokusai-report-json={report}", timeout=SUBPROCESS_TIMEOUT_S,
    )
    output = "\n".join(result.outlines + result.errlines)
    # the stack's server really is the other environment's MLflow 3.9.0 ...
    result.stdout.fnmatch_lines([f"*MLflow ready in * (MLflow {PLATFORM_MLFLOW}, from {python})*"])
    assert result.ret == 0, output[-4000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["verdict"] == "pass", data["diagnoses"]
    checks = {c["nodeid"].rsplit("::", 1)[-1]: c["outcome"] for c in data["checks"]}
    assert checks.get("test_register_model_end_to_end") == "passed", checks
    assert checks.get("test_artifact_roundtrip_through_proxy") == "passed", checks
    # ... and the client is this environment's (the default install: the newest MLflow)
    client = mlflow_client_version()
    assert client is not None
    versions = data.get("versions")
    if isinstance(versions, dict) and "mlflow" in versions:  # JSON 'versions' (issue 10) once it lands
        assert versions["mlflow"] == client
