"""The stack's direct MLflow launch (stack/mlflow_entry.py) against the real ``mlflow server``.

Fidelity: the real CLI, started with the stack's options, spawns a uvicorn worker; its
``/proc/<pid>/environ`` and command line must equal what the direct entry runs with (every
``MLFLOW*`` / ``_MLFLOW*`` variable, the uvicorn options, app, host, port, workers) - for the installed
MLflow here, for the platform's 3.9.0 from its cached environment in the ``slow`` variant. Then the
fallback (an environment the entry does not expect makes it the plain CLI, never a differently
configured server) and the migrated SQLite template.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import threading
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.stack.mlflow_entry import PER_BOOT, REPORT_MARK, TEMPLATE_OPTION, mask, mlflow_variables
from pytest_hokusai.stack.mlflow_server import (
    ENTRY_SCRIPT,
    ServerPython,
    find_server_python,
    mlflow_command,
    mlflow_env,
    mlflow_ready_check,
    start_mlflow,
)
from pytest_hokusai.stack.mlflow_template import CACHE_DIR_ENV, template_path
from pytest_hokusai.stack.process import ManagedProcess, free_port
from tests.support.procs import alive

READY_S = 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Templates go to this test's folder, not the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    return cache


def installed() -> ServerPython:
    return ServerPython(sys.executable, metadata.version("mlflow"))


def platform_server() -> ServerPython:
    from tests.support.mlflow_env import PLATFORM_MLFLOW, mlflow_server_python

    server = find_server_python(mlflow_server_python(PLATFORM_MLFLOW))
    assert server.version == PLATFORM_MLFLOW
    return server


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def proc_cmdline(pid: int) -> list[str]:
    return [part for part in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if part]


def entry_reports(proc: ManagedProcess) -> list[dict[str, Any]]:
    lines = proc.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line[len(REPORT_MARK):]) for line in lines if line.startswith(REPORT_MARK)]


def status(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with _OPENER.open(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def answers(rest_root: str) -> tuple[int, int, int]:
    """Status of a REST call, of the served artifacts' listing, of a REST call with a foreign Host."""
    search = rest_root + "/api/2.0/mlflow/experiments/search?max_results=1"
    return (status(search), status(rest_root + "/api/2.0/mlflow-artifacts/artifacts"),
            status(search, "registry.hokus.ai"))


def comparable(env: dict[str, str]) -> dict[str, str]:
    """MLflow variables, masked like the entry's report, per-boot ones as a presence marker."""
    return {k: ("<per boot>" if k in PER_BOOT else mask(v)) for k, v in mlflow_variables(env).items()}


def start(server: ServerPython, data_dir: Path, port: int, launch: str) -> ManagedProcess:
    proc = start_mlflow(port=port, data_dir=data_dir, server=server, launch=launch)
    try:
        proc.wait_ready(mlflow_ready_check(f"http://127.0.0.1:{port}"), READY_S)
    except BaseException:
        proc.stop()
        raise
    return proc


def assert_direct_equals_cli(server: ServerPython, tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    # 1. the real `mlflow server`: read its uvicorn worker
    cli = start(server, data_dir, port, "cli")
    try:
        leader, workers = cli.pid, [p for p in cli.pids() if p != cli.pid]
        assert proc_cmdline(leader)[1:4] == ["-m", "mlflow", "server"]
        assert len(workers) == 1, f"the CLI's group: {cli.pids()}"
        worker_env, worker_cmd = proc_environ(workers[0]), proc_cmdline(workers[0])
        cli_statuses = answers(base + server.rest_prefix)
    finally:
        cli.stop()
    assert not alive([leader, *workers])
    # 2. the direct entry, same port and same data dir path (fresh)
    shutil.rmtree(data_dir)
    direct = start(server, data_dir, port, "direct")
    try:
        pids = direct.pids()
        direct_cmd = proc_cmdline(direct.pid)
        reports = entry_reports(direct)
        direct_statuses = answers(base + server.rest_prefix)
    finally:
        direct.stop()
    assert not alive(pids)

    assert pids == [direct.pid], "the direct launch is one process"
    assert direct_cmd[:2] == [server.executable, str(ENTRY_SCRIPT)]
    assert [r["mode"] for r in reports] == ["direct"], reports
    report = reports[0]
    assert report["mlflow"] == server.version
    # the worker's command line: `python -m uvicorn <options> app`; the entry runs uvicorn with those options
    assert worker_cmd[:3] == [server.executable, "-m", "uvicorn"]
    assert report["uvicorn"] == worker_cmd[3:]
    assert worker_cmd[-1] == "mlflow.server.fastapi_app:app"
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--workers", "1")):
        assert worker_cmd[worker_cmd.index(flag) + 1] == value
    # every MLflow variable the CLI gave its worker, and no other
    assert comparable(report["env"]) == comparable(worker_env)
    assert worker_env["_MLFLOW_STATIC_PREFIX"] == "/mlflow" and worker_env["_MLFLOW_SERVER_SERVE_ARTIFACTS"] == "true"
    assert worker_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # and the same answers: REST, served artifacts, MLflow's 403 for a Host that is not allowed
    assert cli_statuses == direct_statuses == (200, 200, 403), (cli_statuses, direct_statuses)


def test_direct_launch_configures_the_installed_mlflow_like_its_cli(tmp_path: Path) -> None:
    assert_direct_equals_cli(installed(), tmp_path)


@pytest.mark.slow
def test_direct_launch_configures_the_platforms_mlflow_like_its_cli(tmp_path: Path) -> None:
    """MLflow 3.9.0 from the cached environment, which has no pytest_hokusai installed."""
    server = platform_server()
    probe = [server.executable, "-c", "import importlib.util as u; print(u.find_spec('pytest_hokusai'))"]
    import subprocess

    done = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=mlflow_env(external=True),
                          cwd=tmp_path, check=True)
    assert done.stdout.strip() == "None"
    assert_direct_equals_cli(server, tmp_path)


def test_an_environment_the_entry_does_not_expect_gets_the_plain_cli(tmp_path: Path) -> None:
    """A variable that changes what the CLI configures (here the caller's X-Frame-Options, which
    the entry assumes at its default) makes the entry become `mlflow server` itself, saying why."""
    port, data_dir = free_port(), tmp_path / "data"
    (data_dir / "artifacts").mkdir(parents=True)
    env = {**mlflow_env(), "MLFLOW_SERVER_X_FRAME_OPTIONS": "DENY"}
    proc = ManagedProcess("MLflow", mlflow_command(port=port, data_dir=data_dir, launch="direct"),
                          log_path=data_dir / "logs" / "mlflow.log", env=env, cwd=data_dir).start()
    try:
        proc.wait_ready(mlflow_ready_check(f"http://127.0.0.1:{port}"), READY_S)
        leader_cmd = proc_cmdline(proc.pid)
        workers = [p for p in proc.pids() if p != proc.pid]
        worker_env = proc_environ(workers[0]) if len(workers) == 1 else {}
        reports = entry_reports(proc)
    finally:
        proc.stop()
    assert [r["mode"] for r in reports] == ["cli"], reports
    assert "MLFLOW_SERVER_X_FRAME_OPTIONS" in reports[0]["reason"]
    assert leader_cmd[1:4] == ["-m", "mlflow", "server"]  # the same process, now the CLI
    assert len(workers) == 1 and worker_env["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "DENY"


def _default_experiment(database: Path) -> tuple[Any, ...]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT experiment_id, name, artifact_location, creation_time FROM experiments").fetchall()
    db.close()
    assert len(rows) == 1
    return tuple(rows[0])


def test_sqlite_template_is_made_once_and_copied_into_new_stacks(tmp_path: Path, own_cache: Path) -> None:
    server = installed()
    template = template_path(server.version, server.executable)
    assert str(template).startswith(str(own_cache))
    first = start(server, tmp_path / "one", free_port(), "direct")
    first.stop()
    assert TEMPLATE_OPTION in first.argv and template.is_file()
    made = _default_experiment(template)
    assert made[1:3] == ("Default", "mlflow-artifacts:/0")  # nothing of the first stack's paths
    assert not list(template.parent.glob("*.partial"))

    port = free_port()
    second = start_mlflow(port=port, data_dir=tmp_path / "two", server=server, launch="direct")
    try:
        copied = tmp_path / "two" / "mlflow.db"
        assert copied.is_file() and TEMPLATE_OPTION not in second.argv  # copied before the start
        second.wait_ready(mlflow_ready_check(f"http://127.0.0.1:{port}"), READY_S)
        rest = f"http://127.0.0.1:{port}{server.rest_prefix}/api/2.0/mlflow"
        assert status(rest + "/experiments/get?experiment_id=0") == 200
    finally:
        second.stop()
    assert _default_experiment(copied) == made  # the template's store, not a new migration


def test_no_template_for_a_given_store_uri_or_the_cli(tmp_path: Path, own_cache: Path) -> None:
    server = installed()
    user_db = tmp_path / "user.db"
    given = start_mlflow(port=free_port(), data_dir=tmp_path / "a", server=server, launch="direct",
                         backend_store_uri=f"sqlite:///{user_db}")
    given.stop()
    cli = start_mlflow(port=free_port(), data_dir=tmp_path / "b", server=server, launch="cli")
    cli.stop()
    assert TEMPLATE_OPTION not in given.argv and not (tmp_path / "a" / "mlflow.db").exists()
    assert TEMPLATE_OPTION not in cli.argv
    assert not own_cache.exists() or not any(own_cache.rglob("*.db"))


def test_concurrent_template_writers_never_show_half_a_file(tmp_path: Path) -> None:
    from pytest_hokusai.stack.mlflow_entry import save_template
    from pytest_hokusai.stack.mlflow_template import _usable

    source = tmp_path / "source.db"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
        db.execute("INSERT INTO alembic_version VALUES ('x')")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER, blob TEXT)")
        db.execute("INSERT INTO experiments VALUES (0, ?)", ("y" * 2_000_000,))
    db.close()
    target = tmp_path / "cache" / "t.db"
    seen: list[bool] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if target.exists():
                seen.append(_usable(target))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=save_template, args=(str(source), str(target))) for _ in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert _usable(target) and all(seen)
    assert sorted(os.listdir(target.parent)) == ["t.db"]
