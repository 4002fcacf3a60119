"""Fast iteration end to end: attaching to a running stack, and a fast verdict on a silent host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hokusai.stack.launcher import Stack
from pytest_hokusai.stack.statefile import mint_suite_keys, write_stack_state
from tests.support.silent import silent_port

from .conftest import make_key


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_local_target_attaches_to_a_running_stack_and_leaves_it_running(run_live, e2e_stack: Stack,
                                                                       tmp_path: Path):
    keys = mint_suite_keys(e2e_stack)
    state = write_stack_state(e2e_stack, tmp_path / "stack.json", keys, pids=e2e_stack.pids())
    pids = e2e_stack.pids()

    run = run_live("--hokusai-target=local", f"--hokusai-stack-state-file={state}", use_stack=False)

    assert run.result.ret == pytest.ExitCode.OK, run.explain()
    assert f"attached to the running stack at {e2e_stack.api_url}" in run.output, run.output
    assert "MLflow ready in" not in run.output, "the run started a stack of its own"
    assert run.report is not None and run.report["verdict"] == "pass", run.explain()
    assert run.report["target"]["api_url"] == e2e_stack.api_url
    assert run.report["target"]["key"] == keys["primary"].masked
    outcomes = {c["nodeid"].split("::")[-1]: c["outcome"] for c in run.report["checks"]}
    assert outcomes.get("test_revoked_key_is_rejected") == "passed", outcomes  # the state file's revoked key
    assert outcomes.get("test_readonly_key_reads_but_cannot_write") == "passed", outcomes
    for raw in (k.reveal() for k in keys.values()):
        assert raw not in run.output and raw not in json.dumps(run.report)
    assert e2e_stack.pids() == pids, "the run stopped (part of) a stack it did not start"
    e2e_stack.check_alive()


def test_stale_state_file_falls_back_to_starting_a_stack_and_says_so(run_live, e2e_stack: Stack,
                                                                    tmp_path: Path):
    state = write_stack_state(e2e_stack, tmp_path / "stack.json", mint_suite_keys(e2e_stack))
    data = json.loads(state.read_text())
    data["launcher_pid"] = _dead_pid()
    state.write_text(json.dumps(data))

    run = run_live("--hokusai-target=local", f"--hokusai-stack-state-file={state}", "-k", "test_auth_service_health",
                   use_stack=False)

    assert run.result.ret == pytest.ExitCode.OK, run.explain()
    assert f"stack state file {state} is stale (the hokusai-stack process (pid {data['launcher_pid']}) is gone)" \
        in run.output, run.output
    assert "MLflow ready in" in run.output, "no stack of its own was started"
    assert run.report is not None and run.report["target"]["api_url"] != e2e_stack.api_url
    e2e_stack.check_alive()


def test_a_port_that_never_answers_is_host_unreachable_after_the_connect_budget(run_live):
    with silent_port() as url:
        run = run_live("--hokusai-connect-timeout=1", api_url=url, auth_url=url, use_stack=False,
                       env={"HOKUSAI_API_KEY": make_key()}, hokusai_timeout=60)

    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.output
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    primary = run.primary
    assert primary["code"] == "HOST_UNREACHABLE", run.explain()
    assert "the connection timed out after 1." in primary["summary"] \
        or "the connection timed out after 0." in primary["summary"], primary
    assert any("1 s connect/first-byte budget" in line for line in primary["evidence"]), primary["evidence"]
    failed = [c for c in run.report["checks"] if c["outcome"] in ("failed", "error")]
    assert len(failed) == len(run.report["checks"]), run.explain()
    assert all(c["diagnosis"] == "HOST_UNREACHABLE" for c in failed), run.explain()
    # every check after the first stopped at once, as for a refused port
    assert run.output.count("check not attempted") >= len(failed) - 1, run.output
