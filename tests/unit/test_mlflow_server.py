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


# -- how the server is launched (stack/mlflow_entry.py) ----------------------------------------
def test_launch_mode_defaults_to_direct_and_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    from pytest_hokusai.stack.mlflow_server import ENTRY_SCRIPT, LAUNCH_ENV, launch_mode

    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    assert launch_mode() == "direct"
    monkeypatch.setenv(LAUNCH_ENV, "CLI")
    assert launch_mode() == "cli" and launch_mode("direct") == "direct"
    monkeypatch.setenv(LAUNCH_ENV, "fast")
    with pytest.raises(StackError, match=r"HOKUSAI_STACK_MLFLOW_LAUNCH='fast'.*direct, cli"):
        launch_mode()
    argv = mlflow_command(port=7, data_dir=tmp_path, launch="direct", entry_args=["--x", "y"])
    assert argv[:4] == [sys.executable, str(ENTRY_SCRIPT), "--x", "y"]
    assert argv[4:] == mlflow_command(port=7, data_dir=tmp_path, launch="cli")[4:]


def test_entry_imports_only_the_stdlib_mlflow_and_uvicorn() -> None:
    """The server's Python may be an environment without pytest_hokusai (or anything else)."""
    import ast

    from pytest_hokusai.stack.mlflow_server import ENTRY_SCRIPT

    tree = ast.parse(ENTRY_SCRIPT.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert names - set(sys.stdlib_module_names) == {"mlflow", "uvicorn"}
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
                 for alias in node.names} | {node.module.split(".")[0] for node in tree.body
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert not top_level & {"mlflow", "uvicorn"}  # imported only once the environment is set


def test_entry_compares_every_mlflow_variable() -> None:
    from pytest_hokusai.stack.mlflow_entry import env_differences

    same = {"MLFLOW_A": "1", "_MLFLOW_B": "2", "PATH": "/bin", "_MLFLOW_SERVER_BOOT_ID": "x"}
    assert env_differences(same, {**same, "PATH": "/usr/bin", "_MLFLOW_SERVER_BOOT_ID": "y"}) == []
    assert env_differences(same, {**same, "MLFLOW_A": "3"}) == ["MLFLOW_A: MLflow sets '3', not '1'"]
    assert env_differences(same, {**same, "MLFLOW_NEW": "1"}) == ["MLFLOW_NEW='1' set by MLflow, not known here"]
    assert env_differences(same, {"_MLFLOW_B": "2"}) == ["MLFLOW_A not set by MLflow"]
    assert env_differences({"MLFLOW_TRACKING_URI": "postgresql://u:pw@h/db"}, {}) == [
        "MLFLOW_TRACKING_URI not set by MLflow"]
    assert env_differences({"MLFLOW_X": "postgresql://u:pw@h/db"}, {"MLFLOW_X": "postgresql://u:pw@h/d2"}) == [
        "MLFLOW_X: MLflow sets 'postgresql://u:***@h/d2', not 'postgresql://u:***@h/db'"]


def test_entry_runs_only_one_uvicorn_worker_of_the_app_in_process() -> None:
    import argparse

    from pytest_hokusai.stack.mlflow_entry import APP, command_problems

    options = argparse.Namespace(host="127.0.0.1", port="5000")
    good = ["py", "-m", "uvicorn", "--log-config", "x.yaml", "--host", "127.0.0.1", "--port", "5000",
            "--workers", "1", APP]
    assert command_problems(good, options) == []
    assert command_problems([*good[:-3], "4", APP], options) == ["uvicorn --workers is not 1"]
    assert command_problems(["py", "-m", "gunicorn", *good[3:]], options)
    assert command_problems([*good[:-1], "mlflow.server:app"], options)
    assert command_problems([*good[:3], "--reload", *good[3:]], options) == ["uvicorn --reload"]


def test_expected_worker_env_follows_the_versions_read(tmp_path: Path) -> None:
    import argparse

    from pytest_hokusai.stack.mlflow_entry import expected_worker_env

    options = argparse.Namespace(backend_store_uri="sqlite:///x.db", artifacts_destination="/a",
                                 static_prefix="/mlflow", allowed_hosts="h:1", serve_artifacts=True)
    v39, v311, v317 = (expected_worker_env(options, v) for v in ("3.9.0", "3.11.1", "3.17.2"))
    assert "MLFLOW_ENABLE_WORKSPACES" not in v39 and v311["MLFLOW_ENABLE_WORKSPACES"] == "false"
    assert "_MLFLOW_IN_JOB_EXECUTOR" not in v311 and v317["_MLFLOW_IN_JOB_EXECUTOR"] == "false"
    assert v39["_MLFLOW_SERVER_FILE_STORE"] == v39["MLFLOW_TRACKING_URI"] == "sqlite:///x.db"


def test_broken_template_is_not_copied_but_remade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_hokusai.stack.mlflow_entry import TEMPLATE_OPTION
    from pytest_hokusai.stack.mlflow_template import CACHE_DIR_ENV, prepare_database, template_path

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    assert prepare_database(data, "3.9.0", "/py", direct=False) == []  # the CLI does not make one
    template = template_path("3.9.0", "/py")
    assert prepare_database(data, "3.9.0", "/py", direct=True) == [TEMPLATE_OPTION, str(template)]
    template.write_bytes(b"half a file")
    assert prepare_database(data, "3.9.0", "/py", direct=True) == [TEMPLATE_OPTION, str(template)]
    assert not (data / "mlflow.db").exists()
    assert template_path("3.9.0", "/py") != template_path("3.9.0", "/other/py") != template_path("3.11.1", "/py")
    env_a, env_b = tmp_path / "a" / "python", tmp_path / "b" / "python"  # two virtualenvs, one base python
    for link in (env_a, env_b):
        link.parent.mkdir()
        link.symlink_to(sys.executable)
    assert template_path("3.9.0", str(env_a)) != template_path("3.9.0", str(env_b))
    (data / "mlflow.db").write_bytes(b"the user's")
    assert prepare_database(data, "3.9.0", "/py", direct=True) == []  # an existing store is left alone
    assert (data / "mlflow.db").read_bytes() == b"the user's"
