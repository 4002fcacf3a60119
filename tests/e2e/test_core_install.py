"""The light core install: ``pip install <checkout>`` without extras, in a fresh virtualenv.

It has the MLflow client (``mlflow-skinny``) and the checks but none of the local stack's parts, so
``--hokusai-target=local`` and ``hokusai-stack up`` are usage errors naming the install line, and the
shipped checks gate a stack started from another environment (this one) as a remote target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SMALL_EDGE_ARGS, SUBPROCESS_TIMEOUT_S, E2EKeys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSTALL_LINE = "pip install 'pytest-hokusai[stack]'"
HEAVY = ("mlflow", "sklearn", "pandas", "fastapi", "uvicorn", "matplotlib", "starlette")
_INSTALL_TIMEOUT_S = 1200


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOKUSAI_", "MLFLOW_", "COV_", "COVERAGE_", "PYTEST_", "VIRTUAL_ENV"))
           and k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = SUBPROCESS_TIMEOUT_S
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory):
    """A fresh virtualenv with ``pip install <checkout>`` (no extras); removed after the module."""
    env_dir = tmp_path_factory.mktemp("core-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    done = _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)], ROOT, _clean_env(),
                timeout=_INSTALL_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    yield env_dir
    shutil.rmtree(env_dir, ignore_errors=True)


def test_core_has_the_client_and_none_of_the_stack(core_env: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "def v(d):\n"
        "    try:\n        return m.version(d)\n    except m.PackageNotFoundError:\n        return None\n"
        "import pytest_hokusai.plugin\n"
        f"heavy = [n for n in {HEAVY!r} if n in sys.modules]\n"
        "print(json.dumps({d: v(d) for d in ('mlflow', 'mlflow-skinny', 'skops', 'scikit-learn', 'pandas',"
        " 'httpx', 'sqlalchemy', 'filelock', 'matplotlib')} | {'heavy': heavy}))\n"
    )
    done = _run([str(core_env / "bin" / "python"), "-c", probe], tmp_path, _clean_env())
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["mlflow"] is None and found["mlflow-skinny"], found  # the client without the server
    assert found["skops"] and found["scikit-learn"] and found["pandas"], found
    assert found["sqlalchemy"] is None and found["matplotlib"] is None, found
    assert found["heavy"] == [], "importing the plugin must stay cheap"


def test_local_target_and_stack_up_name_the_extra(core_env: Path, tmp_path: Path) -> None:
    env = _clean_env()
    local = _run([str(core_env / "bin" / "pytest"), "--pyargs", "pytest_hokusai.checks", "-m", "live",
                  "--hokusai-target=local", "-p", "no:cacheprovider"], tmp_path, env)
    assert local.returncode == 4, local.stdout[-2000:] + local.stderr[-2000:]
    assert INSTALL_LINE in local.stderr and "--hokusai-target=local" in local.stderr
    assert "INTERNALERROR" not in local.stdout + local.stderr
    up = _run([str(core_env / "bin" / "hokusai-stack"), "up"], tmp_path, env, timeout=60)
    assert up.returncode == 2 and INSTALL_LINE in up.stderr, up.stderr
    faults = _run([str(core_env / "bin" / "hokusai-stack"), "faults"], tmp_path, env, timeout=60)
    assert faults.returncode == 0 and "wrong-service-id" in faults.stdout  # needs no extra


def test_core_install_gates_a_stack_started_elsewhere(core_env: Path, tmp_path: Path, e2e_stack,
                                                      e2e_keys: E2EKeys) -> None:
    """The shipped checks, run by the core install's pytest, against the stack this environment started."""
    report = tmp_path / "report.json"
    env = _clean_env(**e2e_keys.env())
    done = _run([str(core_env / "bin" / "pytest"), "--pyargs", "pytest_hokusai.checks", "-m", "live",
                 "-p", "no:cacheprovider", "--hokusai-api-url", e2e_stack.api_url,
                 "--hokusai-auth-url", e2e_stack.auth_url, f"--hokusai-report-json={report}", *SMALL_EDGE_ARGS],
                tmp_path, env, timeout=SUBPROCESS_TIMEOUT_S)
    output = done.stdout + done.stderr
    for raw in e2e_keys.env().values():
        assert raw not in output, "a full API key leaked into the run's output"
    assert done.returncode == 0, output[-4000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["verdict"] == "pass", data["diagnoses"]
    outcomes = {c["nodeid"].rsplit("::", 1)[-1]: c["outcome"] for c in data["checks"]}
    assert outcomes.get("test_register_model_end_to_end") == "passed", outcomes
    assert sum(1 for o in outcomes.values() if o == "passed") >= 20, outcomes
