"""The local stack's launcher, process handling and CLI, against real child processes.

Each test that starts its own stack (readiness and teardown, start failures, the CLI) costs a
few seconds; the rest use the session ``stack`` fixture.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.errors import StackError
from pytest_hokusai.secret import Secret, redact
from pytest_hokusai.stack.config import STACK_TOKEN_HEADER
from pytest_hokusai.stack.launcher import Stack, start_stack, write_state_file
from pytest_hokusai.stack.process import ManagedProcess, group_pids
from tests.support.procs import alive, descendants, process_table

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PY = sys.executable


# -- helpers --------------------------------------------------------------------------------
def http(method: str, url: str, *, headers: dict[str, str] | None = None,
         body: Any = None) -> tuple[int, str, str]:
    """(status, content type, body) of one request, errors included; 10 s timeout."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read().decode()


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def mentioning(text: str) -> set[int]:
    return {p for p, (_, cmd) in process_table().items() if text in cmd and p != os.getpid()}


# -- ManagedProcess -------------------------------------------------------------------------
def test_early_exit_fails_at_once_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess("crasher", [PY, "-c", "print('boom-marker'); raise SystemExit(3)"],
                          log_path=tmp_path / "crasher.log").start()
    started = time.monotonic()
    try:
        with pytest.raises(StackError) as info:
            proc.wait_ready(lambda: False, deadline_s=30)
    finally:
        proc.stop()
    assert time.monotonic() - started < 10
    assert "crasher exited with status 3" in str(info.value)
    assert "boom-marker" in str(info.value)


def test_deadline_passes(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", ["sleep", "30"], log_path=tmp_path / "s.log").start()
    try:
        with pytest.raises(StackError, match="sleeper was not ready within 1 s"):
            proc.wait_ready(lambda: False, deadline_s=1)
    finally:
        proc.stop()
    assert not alive([proc.pid])


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
print("ready", child.pid, flush=True)
time.sleep(60)
"""


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = ManagedProcess("stubborn", [PY, "-c", STUBBORN], log_path=log).start()
    proc.wait_ready(lambda: "ready" in log.read_text(), deadline_s=20)
    pids = proc.pids()
    assert len(pids) == 2  # the child and its grandchild, one process group
    started = time.monotonic()
    status = proc.stop(timeout=1.0)
    assert status == -signal.SIGKILL
    assert time.monotonic() - started < 8
    assert not alive(pids) and group_pids(proc.pid) == []
    assert proc.stop() == status  # idempotent, safe when everything is gone


def test_mlflow_gets_a_minimal_env_and_the_platform_flags(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from pytest_hokusai.stack.mlflow_server import mlflow_command, mlflow_env

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "leak-me-not")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere")
    monkeypatch.setenv("HOKUSAI_API_KEY", "leak-me-not")
    env = mlflow_env()
    assert "leak-me-not" not in env.values() and "MLFLOW_TRACKING_URI" not in env
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    argv = mlflow_command(port=5999, data_dir=tmp_path)
    joined = " ".join(argv)
    for flag in ("--host 127.0.0.1", "--port 5999", "--workers 1", "--static-prefix /mlflow",
                 "--serve-artifacts", f"--artifacts-destination {tmp_path.resolve() / 'artifacts'}",
                 f"--backend-store-uri sqlite:///{tmp_path.resolve() / 'mlflow.db'}"):
        assert flag in joined
    assert "postgresql://u@h/db" in mlflow_command(port=1, data_dir=tmp_path, backend_store_uri="postgresql://u@h/db")


def test_server_python_without_mlflow_is_refused_with_the_install_line(tmp_path: Path) -> None:
    import re

    from pytest_hokusai.stack.mlflow_server import find_server_python

    subprocess.run([PY, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True, timeout=60)
    python = tmp_path / "env" / "bin" / "python"
    with pytest.raises(StackError, match=rf"has no MLflow server installed.*{re.escape(str(python))} -m pip "
                                         r"install 'mlflow>=3\.9'"):
        find_server_python(python)
    # start_stack fails before it starts anything
    with pytest.raises(StackError, match="has no MLflow server"), start_stack(data_dir=tmp_path / "data",
                                                                              mlflow_python=python):
        pass
    assert not (tmp_path / "data" / "logs").exists()


def test_server_python_given_explicitly_is_probed_for_its_mlflow() -> None:
    from importlib import metadata

    from pytest_hokusai.stack.mlflow_server import find_server_python

    server = find_server_python(PY)
    assert server.external and server.version == metadata.version("mlflow")


ORPHANED_LAUNCHER = """
import sys, time
from pathlib import Path
from pytest_hokusai.stack.process import ManagedProcess, start_watchdog
log = Path(sys.argv[1])
sleeper = ManagedProcess("sleeper", ["sleep", "60"], log_path=log / "sleeper.log").start()
start_watchdog([sleeper], log / "watchdog.log")
print(sleeper.pid, flush=True)
time.sleep(60)
"""


def test_watchdog_stops_children_of_a_launcher_killed_without_teardown(tmp_path: Path) -> None:
    launcher = subprocess.Popen([PY, "-c", ORPHANED_LAUNCHER, str(tmp_path)], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        assert launcher.stdout is not None
        sleeper = int(launcher.stdout.readline())
        assert alive([sleeper])
        launcher.kill()  # SIGKILL: no finally, no atexit
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 15
        while alive([sleeper]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive([sleeper])
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        if launcher.stdout is not None:
            launcher.stdout.close()


# -- the session stack ------------------------------------------------------------------------
def test_stack_urls_health_and_repr(stack: Stack) -> None:
    assert stack.tracking_uri == stack.api_url + "/api/mlflow"
    assert stack.direct_mlflow_url == stack.api_url + "/mlflow"
    assert stack.admin_token not in repr(stack)
    assert http("GET", stack.api_url + "/health")[0] == 200
    assert http("GET", stack.auth_url + "/health")[0] == 200
    assert len({stack.api_url, stack.auth_url, stack.mlflow_url}) == 3
    assert set(stack.ready_times) == {"MLflow", "auth service", "API service"}
    assert 0 < stack.startup_seconds < 60


def test_mlflow_layout_under_the_static_prefix(stack: Stack) -> None:
    """Contract section 1: with --static-prefix /mlflow the UI, health and ajax-api are under /mlflow on
    every version; MLflow <= 3.11 keeps /api/2.0 unprefixed, >= 3.12 prefixes it too. Whichever MLflow
    runs the server (this environment's, or HOKUSAI_STACK_MLFLOW_PYTHON's), the stack knows where."""
    from packaging.version import Version

    assert stack.mlflow_version
    prefixed = Version(stack.mlflow_version) >= Version("3.12")
    search = "/2.0/mlflow/experiments/search?max_results=1"
    rest, not_rest = ("/mlflow/api", "/api") if prefixed else ("/api", "/mlflow/api")
    status, ctype, body = http("GET", stack.mlflow_url + rest + search)
    assert (status, ctype) == (200, "application/json")
    assert "experiments" in json.loads(body)
    assert http("GET", stack.mlflow_url + not_rest + search)[0] == 404
    assert stack.mlflow_rest_url == stack.mlflow_url + ("/mlflow" if prefixed else "")
    assert http("GET", stack.mlflow_url + "/mlflow/ajax-api" + search)[0] == 200
    assert http("GET", stack.mlflow_url + "/ajax-api" + search)[0] == 404
    assert http("GET", stack.mlflow_url + "/mlflow/health")[0] == 200
    # MLflow checks the Host header including its port, as on the platform.
    assert http("GET", stack.mlflow_url + rest + search, headers={"Host": "registry.hokus.ai"})[0] == 403


def test_platform_url_layout_on_any_mlflow(stack: Stack) -> None:
    """The URLs clients see do not depend on the server's version: the tracking URI {api}/api/mlflow
    reaches MLflow's REST API through the proxy, and the balancer's direct {api}/mlflow passes the path
    to MLflow unchanged (so it answers exactly what MLflow answers at /mlflow/...)."""
    key = stack.mint_key(scopes=("read",), name="test_stack layout key")
    bearer = {"Authorization": f"Bearer {key.reveal()}"}
    search = "/2.0/mlflow/experiments/search?max_results=1"
    status, _, body = http("GET", stack.tracking_uri + "/api" + search, headers=bearer)
    assert status == 200 and "experiments" in json.loads(body)
    assert http("GET", stack.tracking_uri + "/api" + search)[0] == 401  # auth before routing
    for path in ("/api" + search, "/ajax-api" + search, "/health"):
        assert http("GET", stack.direct_mlflow_url + path)[0] == http("GET", stack.mlflow_url + "/mlflow" + path)[0]
    assert http("GET", stack.direct_mlflow_url + "/ajax-api" + search)[0] == 200
    assert http("GET", stack.api_url + "/api/health/mlflow")[0] == 200
    handle = Stack.from_json(stack.to_json())
    assert (handle.mlflow_version, handle.mlflow_rest_url) == (stack.mlflow_version, stack.mlflow_rest_url)


def test_mint_and_revoke_keys(stack: Stack) -> None:
    key = stack.mint_key(scopes=("read",), name="test_stack read key")
    assert isinstance(key, Secret) and key.is_well_formed()
    assert key.reveal() not in repr(key)
    validate = stack.auth_url + "/api/v1/keys/validate"
    bearer = {"Authorization": f"Bearer {key.reveal()}"}
    status, _, body = http("POST", validate, headers=bearer, body={"service_id": "platform"})
    assert status == 200, redact(body)
    listed = {k["key_id"]: k for k in stack.list_keys()}
    assert listed[stack.key_id_of(key)]["scopes"] == ["read"]
    stack.revoke(key)
    assert http("POST", validate, headers=bearer, body={"service_id": "platform"})[0] == 401
    assert stack.list_keys() and not {k["key_id"]: k for k in stack.list_keys()}[stack.key_id_of(key)]["is_active"]


def test_set_faults_switches_a_running_stack(healthy_stack: Stack) -> None:
    healthy_stack.set_faults(["auth-down"])
    status, ctype, _ = http("GET", healthy_stack.auth_url + "/health")
    assert status == 503 and ctype.startswith("text/html")
    # the launcher's own requests (stack token) bypass the fault: keys can still be minted
    assert healthy_stack.mint_key().is_well_formed()
    healthy_stack.set_faults([])
    assert http("GET", healthy_stack.auth_url + "/health")[0] == 200
    with pytest.raises(ValueError, match="unknown fault switch.*known: api-down"):
        healthy_stack.set_faults(["no-such-fault"])


def test_stack_control_needs_the_stack_token(stack: Stack) -> None:
    for base in (stack.auth_url, stack.api_url):
        assert http("PUT", base + "/_stack/faults", body={"faults": ["auth-down"]})[0] in (401, 403)
        wrong = {STACK_TOKEN_HEADER: "not-the-token"}
        assert http("PUT", base + "/_stack/faults", headers=wrong, body={"faults": ["auth-down"]})[0] in (401, 403)
    assert http("GET", stack.auth_url + "/health")[0] == 200


def test_state_file_hands_the_stack_to_another_process(stack: Stack, tmp_path: Path) -> None:
    path = write_state_file(stack, tmp_path / "state" / "stack.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    handle = Stack.from_json(path.read_text())
    assert (handle.api_url, handle.tracking_uri) == (stack.api_url, stack.tracking_uri)
    key = handle.mint_key(name="from a handle")
    assert key.is_well_formed()
    handle.revoke(key)
    pids = stack.pids()
    handle.stop()  # a handle owns no process
    assert handle.pids() == [] and alive(pids) == set(pids)


# -- starting and stopping ------------------------------------------------------------------
def test_start_ready_and_stop_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    before = descendants(os.getpid())
    lines: list[str] = []
    started = time.monotonic()
    with start_stack(progress=lines.append) as own:
        ready_s = time.monotonic() - started
        data_dir = own.data_dir
        pids = own.pids()
        memory = rss_mb(pids)
        mlflow_group = own._processes[0].pids()
        during = descendants(os.getpid()) - before
        assert set(pids) == during
        assert own.mlflow_url and http("GET", own.mlflow_url + "/mlflow/health")[0] == 200
        assert mentioning(str(data_dir))  # MLflow's command line names the data dir
        stop_started = time.monotonic()
    stop_s = time.monotonic() - stop_started
    after = descendants(os.getpid()) - before
    with capsys.disabled():
        print(f"\n  stack ready in {ready_s:.1f} s ({'; '.join(lines)}); {len(pids)} processes "
              f"(MLflow group {len(mlflow_group)}), {memory:.0f} MB RSS; {len(during)} new descendants; "
              f"stopped in {stop_s:.1f} s; {len(after)} left")
    assert ready_s < 60
    assert sorted(line.split(" ready in ")[0] for line in lines) == ["API service", "MLflow", "auth service"]
    assert lines[-1].startswith("API service ready in")  # it starts once the other two are up
    # MLflow (one process: the direct entry; two with HOKUSAI_STACK_MLFLOW_LAUNCH=cli), auth, API, watchdog
    assert len(pids) >= 4 and len(mlflow_group) >= 1
    assert not alive(pids) and not after
    assert not mentioning(str(data_dir))
    assert not data_dir.exists()  # the stack made it, the stack removed it


@pytest.mark.parametrize("kwargs, expected", [
    ({"backend_store_uri": "nosuchdb://nowhere"}, ["MLflow exited with status 1", "nosuchdb"]),
    ({"startup_timeout": 1.5}, ["was not ready within 1.5 s"]),
], ids=["invalid-backend-store", "deadline"])
def test_start_failure_raises_with_log_tail_and_leaves_nothing(
    tmp_path: Path, kwargs: dict[str, Any], expected: list[str]
) -> None:
    before = descendants(os.getpid())
    with pytest.raises(StackError) as info, start_stack(data_dir=tmp_path, **kwargs):
        pytest.fail("the stack should not have started")
    message = str(info.value)
    for text in expected:
        assert text in message
    assert "last lines of" in message
    assert not descendants(os.getpid()) - before
    assert not mentioning(str(tmp_path))


def test_unknown_fault_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fault switch.*nope.*known:"), \
            start_stack(data_dir=tmp_path, faults=["nope"]):
        pass
    assert not (tmp_path / "logs").exists()


# -- the CLI --------------------------------------------------------------------------------
def _reader(stream: Any, sink: queue.Queue[tuple[str, str]], name: str) -> None:
    for line in stream:
        sink.put((name, line.rstrip("\n")))
    sink.put((name, ""))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pytest_hokusai.stack.cli", *args], check=False, capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.slow
def test_cli_up_keys_and_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    data_dir = tmp_path / "data"
    up = subprocess.Popen([PY, "-m", "pytest_hokusai.stack.cli", "up", "--data-dir", str(data_dir)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True)
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(stream, lines, name), daemon=True)
               for stream, name in ((up.stdout, "out"), (up.stderr, "err"))]
    for reader in readers:
        reader.start()
    out: list[str] = []
    err: list[str] = []
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("source ") for line in out):
            assert time.monotonic() < deadline, "hokusai-stack up printed no banner in 90 s"
            try:
                name, line = lines.get(timeout=0.5)
            except queue.Empty:
                assert up.poll() is None, f"up exited early: {redact(chr(10).join(err))}"
                continue
            (out if name == "out" else err).append(line)
        # the export lines are in a 0600 env file; the screen shows the key masked and how to load it
        env_file = Path(next(line for line in out if line.startswith("source ")).removeprefix("source "))
        assert env_file == data_dir / "hokusai-stack.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        env_lines = env_file.read_text().splitlines()
        exports = dict(line.removeprefix("export ").split("=", 1) for line in env_lines
                       if line.startswith("export ") and " " not in line.removeprefix("export "))
        up_key = Secret(exports.pop("HOKUSAI_API_KEY"), source="hokusai-stack up")  # masks it from now on
        state_file = Path(exports["HOKUSAI_STACK_STATE_FILE"])
        assert up_key.is_well_formed()
        screen = "\n".join(out + err)
        assert up_key.reveal() not in screen, "the full key must not be printed"
        assert up_key.masked in screen
        sourced = subprocess.run(["bash", "-c", f"source {env_file} && echo \"$MLFLOW_TRACKING_TOKEN\""],
                                 capture_output=True, text=True, timeout=30, check=True)
        assert sourced.stdout.strip() == up_key.reveal(), "sourcing the env file sets the token"
        assert state_file == data_dir / "stack.json" and stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert up_key.reveal() not in state_file.read_text()
        children = descendants(up.pid)
        assert len(children) >= 4  # MLflow (one process, direct launch), auth, API, watchdog
        assert any(line.startswith("hokusai-stack: MLflow ready in") for line in err)
        state = json.loads(state_file.read_text())

        # the printed key works through the proxy
        status, _, body = http("GET", exports["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search"
                               "?max_results=1", headers={"Authorization": f"Bearer {up_key.reveal()}"})
        assert status == 200, redact(body)

        created = _cli("keys", "create", "--scopes", "read", "--state-file", str(state_file), env=env)
        assert created.returncode == 0, redact(created.stderr)
        new_key = Secret(created.stdout.strip(), source="keys create")
        assert new_key.is_well_formed() and new_key != up_key
        assert new_key.masked in created.stderr and new_key.reveal() not in created.stderr
        key_id = created.stderr.split("key_id ")[1].split(",")[0]

        listed = _cli("keys", "list", env={**env, "HOKUSAI_STACK_STATE_FILE": str(state_file)})
        assert listed.returncode == 0 and key_id in listed.stdout
        assert up_key.reveal() not in listed.stdout and new_key.reveal() not in listed.stdout

        revoked = _cli("keys", "revoke", key_id, "--state-file", str(state_file), env=env)
        assert revoked.returncode == 0 and f"revoked key {key_id}" in revoked.stdout
        row = next(line for line in _cli("keys", "list", "--state-file", str(state_file), env=env)
                   .stdout.splitlines() if line.startswith(key_id))
        assert row.split()[2] == "no"
        target = next(line for line in env_lines if line.startswith("export HOKUSAI_TARGET=remote "))
        assert f"HOKUSAI_API_URL={state['api_url']} HOKUSAI_AUTH_URL={state['auth_url']}" in target

        missing = _cli("keys", "list", "--state-file", str(tmp_path / "nope.json"), env=env)
        assert missing.returncode == 2 and "does not exist" in missing.stderr
        assert "Traceback" not in missing.stderr

        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        for pid in alive(children):
            os.killpg(pid, signal.SIGKILL)
        for reader in readers:
            reader.join(timeout=10)
        for stream in (up.stdout, up.stderr):
            assert stream is not None
            stream.close()
    while True:
        try:
            name, line = lines.get_nowait()
        except queue.Empty:
            break
        (out if name == "out" else err).append(line)
    assert not alive(children)
    assert not state_file.exists()
    assert not env_file.exists(), "the env file (a full key) is removed at stop"
    assert "hokusai-stack: stopped" in err
    assert "Traceback" not in "\n".join(err)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    bad = _cli("up", "--fault", "nope", "--data-dir", str(tmp_path), env=env)
    assert bad.returncode == 2
    assert "unknown fault switch(es): nope; known: api-down" in bad.stderr and "Traceback" not in bad.stderr
    no_state = _cli("keys", "list", env=env)
    assert no_state.returncode == 2 and "--state-file" in no_state.stderr
    table = _cli("faults", env=env)
    assert table.returncode == 0 and "wrong-service-id" in table.stdout and "SERVICE_ID_REJECTED" in table.stdout
    missing = tmp_path / "no-such-env" / "bin" / "python"
    other = _cli("up", "--mlflow-python", str(missing), "--data-dir", str(tmp_path / "d"), env=env)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert f"the MLflow server's Python '{missing}' is not an executable file" in other.stderr
    from_env = _cli("up", "--data-dir", str(tmp_path / "d"), env={**env, "HOKUSAI_STACK_MLFLOW_PYTHON": str(missing)})
    assert from_env.returncode == 1 and str(missing) in from_env.stderr
