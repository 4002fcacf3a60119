"""The stack's MLflow server on any MLflow version and from another environment; the [stack] extra."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pytest_hokusai.errors import StackError
from pytest_hokusai.settings import SETTINGS, resolve_settings
from pytest_hokusai.stack import extra
from pytest_hokusai.stack.mlflow_server import (
    SERVER_PYTHON_ENV,
    ServerPython,
    find_server_python,
    mlflow_command,
    mlflow_env,
    rest_prefix_for,
)


@pytest.mark.parametrize(("version", "prefix"), [
    ("2.9.2", ""), ("3.4.0", ""), ("3.9.0", ""), ("3.10.0", ""), ("3.11.1", ""),  # contract section 1
    ("3.12.0", "/mlflow"), ("3.12.0rc1", "/mlflow"), ("3.15.0", "/mlflow"), ("3.17.2", "/mlflow"),
    ("4.0.0", "/mlflow"), ("weird", "/mlflow"),
])
def test_rest_prefix_follows_the_server_version(version, prefix):
    assert rest_prefix_for(version) == prefix
    assert ServerPython("/x/python", version).rest_prefix == prefix


def test_command_runs_the_chosen_python(tmp_path: Path) -> None:
    assert mlflow_command(port=1, data_dir=tmp_path)[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert mlflow_command(port=1, data_dir=tmp_path, python="/opt/m39/bin/python")[0] == "/opt/m39/bin/python"


def test_another_environment_gets_none_of_this_ones_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/here/site-packages")
    monkeypatch.setenv("VIRTUAL_ENV", "/here")
    assert mlflow_env()["PYTHONPATH"] == "/here/site-packages"
    other = mlflow_env(external=True)
    assert "PYTHONPATH" not in other and "VIRTUAL_ENV" not in other
    assert other["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_default_is_this_interpreter_and_its_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_PYTHON_ENV, raising=False)
    server = find_server_python()
    assert server.executable == sys.executable and not server.external
    assert server.version == metadata.version("mlflow")


def test_core_install_without_server_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_PYTHON_ENV, raising=False)
    real = metadata.version

    def version(name: str) -> str:
        if name == "mlflow":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(StackError, match=r"pip install 'pytest-hokusai\[stack\]'.*HOKUSAI_STACK_MLFLOW_PYTHON"):
        find_server_python()


def test_bad_server_python_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StackError, match="not an executable file"):
        find_server_python(tmp_path / "nope" / "python")
    plain = tmp_path / "python"
    plain.write_text("not a program")
    with pytest.raises(StackError, match="not an executable file"):
        find_server_python(plain)
    monkeypatch.setenv(SERVER_PYTHON_ENV, str(tmp_path / "from-env"))
    with pytest.raises(StackError, match="from-env"):
        find_server_python()  # the variable is the default


# -- the [stack] extra ------------------------------------------------------------------------
def _without(monkeypatch: pytest.MonkeyPatch, modules: set[str], *, mlflow: bool = True) -> None:
    real_find, real_version = extra.find_spec, metadata.version
    monkeypatch.setattr(extra, "find_spec", lambda name: None if name in modules else real_find(name))

    def version(name: str) -> str:
        if name == "mlflow" and not mlflow:
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)


def test_stack_extra_complete_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_PYTHON_ENV, raising=False)
    assert extra.missing_stack_parts() == []
    assert extra.stack_extra_problem("--hokusai-target=local") is None


def test_core_install_is_told_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_PYTHON_ENV, raising=False)
    _without(monkeypatch, {"fastapi", "uvicorn"}, mlflow=False)
    problem = extra.stack_extra_problem("--hokusai-target=local")
    assert problem is not None
    assert "pip install 'pytest-hokusai[stack]'" in problem and "fastapi" in problem and "uvicorn" in problem
    assert "mlflow (the server" in problem and "--hokusai-target=remote" in problem


def test_server_elsewhere_needs_no_local_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, set(), mlflow=False)
    assert extra.missing_stack_parts(server_elsewhere=True) == []
    assert extra.missing_stack_parts() != []


# -- the setting ------------------------------------------------------------------------------
def test_stack_mlflow_python_setting(tmp_path: Path) -> None:
    spec = next(s for s in SETTINGS if s.name == "stack-mlflow-python")
    assert (spec.option, spec.env, spec.ini) == ("--hokusai-stack-mlflow-python", "HOKUSAI_STACK_MLFLOW_PYTHON",
                                                 "hokusai_stack_mlflow_python")
    assert resolve_settings({}, {}, {}).stack_mlflow_python is None
    settings = resolve_settings({}, {"HOKUSAI_STACK_MLFLOW_PYTHON": sys.executable}, {})
    assert settings.stack_mlflow_python == Path(sys.executable)
    assert settings.sources["stack_mlflow_python"] == "env HOKUSAI_STACK_MLFLOW_PYTHON"
    with pytest.raises(Exception, match=r"hokusai setting 'stack-mlflow-python'.*executable python"):
        resolve_settings({"hokusai_stack_mlflow_python": str(tmp_path / "missing")}, {}, {})
    assert os.access(sys.executable, os.X_OK)
