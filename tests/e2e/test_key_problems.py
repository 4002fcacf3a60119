"""Key and setting problems end to end: reported before any request, as usage errors or verdicts.

No stack here: the URLs point at a loopback server that counts every connection (which must stay
at zero) or at closed ports.
"""

from __future__ import annotations

import pytest

from tests.support.fixedserver import FixedAnswerServer

from .conftest import LiveRun, closed_port_url, make_key

#: The issue's explicit bound for a run against an unreachable deployment.
UNREACHABLE_BOUND_S = 15.0


def _run_against(run_live, server: FixedAnswerServer, *args: str, **kwargs) -> LiveRun:
    return run_live(*args, api_url=server.url, auth_url=server.url, use_stack=False, **kwargs)


def test_key_missing_is_a_usage_error_with_a_report_and_no_request(run_live, counting_server):
    run = _run_against(run_live, counting_server, env={"HOKUSAI_API_KEY": None})

    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    errors = "\n".join(run.result.errlines)
    assert "HOKUSAI_API_KEY" in errors and "--hokusai-target=local" in errors, run.output
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == "KEY_MISSING", run.explain()
    assert run.report["checks"] == [], "no check may run without a key"
    assert counting_server.connections == 0, counting_server.requests


def test_key_missing_also_with_other_keys_set(run_live, counting_server):
    """Only the primary key counts: a read-only key alone is still KEY_MISSING."""
    run = _run_against(run_live, counting_server,
                       env={"HOKUSAI_API_KEY": None, "HOKUSAI_READONLY_API_KEY": make_key()})

    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    assert run.primary["code"] == "KEY_MISSING", run.explain()
    assert counting_server.connections == 0, counting_server.requests


def test_key_malformed_fails_before_any_request(run_live, counting_server):
    run = _run_against(run_live, counting_server, env={"HOKUSAI_API_KEY": "hk_live_short"})

    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output  # a bad setting: one message, exit 4
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == "KEY_MALFORMED", run.explain()
    assert counting_server.connections == 0, counting_server.requests


def test_unreachable_deployment_is_diagnosed_within_15_seconds(run_live):
    api_url, auth_url = closed_port_url(), closed_port_url()

    run = run_live(api_url=api_url, auth_url=auth_url, use_stack=False, env={"HOKUSAI_API_KEY": make_key()})

    assert run.seconds < UNREACHABLE_BOUND_S, f"took {run.seconds:.1f} s\n{run.explain()}"
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.output
    assert run.report is not None and run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == "HOST_UNREACHABLE", run.explain()
    failed = [c for c in run.report["checks"] if c["outcome"] in ("failed", "error")]
    assert failed, run.explain()
    assert all(c["diagnosis"] for c in failed), run.explain()


@pytest.mark.parametrize(
    ("how", "source"),
    [("cli", "command line --hokusai-timeout"), ("env", "env HOKUSAI_TIMEOUT")],
)
def test_malformed_setting_is_a_usage_error_naming_it_and_its_source(run_live, counting_server, how, source):
    if how == "cli":
        run = _run_against(run_live, counting_server, "--hokusai-timeout=abc", env={"HOKUSAI_API_KEY": make_key()},
                           hokusai_timeout=None, expect_report=False)
    else:
        run = _run_against(run_live, counting_server, env={"HOKUSAI_API_KEY": make_key(), "HOKUSAI_TIMEOUT": "abc"},
                           hokusai_timeout=None, expect_report=False)

    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    errors = "\n".join(run.result.errlines)
    assert "'timeout'" in errors and "'abc'" in errors and source in errors, run.output
    assert counting_server.connections == 0, counting_server.requests
