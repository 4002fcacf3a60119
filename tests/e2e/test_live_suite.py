"""The shipped live suite end to end (issue 3): healthy, with a read-only key, with a proxy that
validates for another service_id, and distributed with pytest-xdist.

Each test runs ``pytest --pyargs pytest_hokusai.checks -m live`` (the whole suite, with the two
heavy edge checks made smaller, see ``SMALL_EDGE_ARGS``) in a subprocess against the e2e stack.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from pytest_hokusai.sdk import CANARY_CLI_MODEL, CANARY_MODEL

from .conftest import SMALL_EDGE_ARGS, LiveRun, short_id
from .test_sdk import sdk_installed

#: The SDK checks: they skip without the SDK (hokusai-ml-platform) and must pass with it (CI installs it).
SDK_CHECKS = {
    "test_sdk.py::test_sdk_model_registry_connects",
    "test_sdk.py::test_sdk_registers_tokenized_model",
    "test_sdk.py::test_sdk_cli_registers_model",
    "test_sdk.py::test_sdk_fallback_keeps_token_and_tracking_uri",
}
SDK_INSTALLED = sdk_installed()
#: What may skip: the SDK checks, and only when the SDK is not installed.
MAY_SKIP = set() if SDK_INSTALLED else SDK_CHECKS
#: The SDK checks that write (they fail with a read-only key like the stock client's writes).
SDK_WRITE_CHECKS = {"test_sdk.py::test_sdk_registers_tokenized_model", "test_sdk.py::test_sdk_cli_registers_model"}

#: Checks that write through the proxy with the primary key (create an experiment, log an artifact,
#: register a model). The contract's write detection (section 3: POST/PUT/PATCH/DELETE on MLflow
#: paths need the write scope) refuses exactly these for a read-only key; every read still passes.
WRITE_CHECKS = {
    "test_registration.py::test_register_model_end_to_end",
    "test_registration.py::test_artifact_roundtrip_through_proxy",
    "test_perf.py::test_registration_time",
    "test_edge.py::test_concurrent_clients_lose_no_registration",
    "test_edge.py::test_large_model_artifact_roundtrip",
    "test_proxy.py::test_mlflow_client_deletes_through_proxy",
} | (SDK_WRITE_CHECKS if SDK_INSTALLED else set())

#: Checks that need the proxy to accept a valid key: the writes above and every authenticated read.
#: Checks that call the auth service directly, or expect the proxy to refuse (no key, a bad,
#: revoked or expired key), or do not use the key (health, direct /mlflow) do not depend on it.
PROXY_KEY_CHECKS = WRITE_CHECKS | {
    "test_bearer.py::test_key_is_accepted[bearer]",
    "test_bearer.py::test_key_is_accepted[apikey]",
    "test_bearer.py::test_key_is_accepted[x-api-key]",
    "test_bearer.py::test_mlflow_client_search_experiments",
    "test_proxy.py::test_experiments_search_through_proxy",
    "test_proxy.py::test_discovery_matrix[proxy-api/2.0-key]",
    "test_perf.py::test_proxy_request_latency",
    "test_edge.py::test_readonly_key_reads_but_cannot_write",
} | (SDK_CHECKS if SDK_INSTALLED else set())

#: Direct auth-service checks: they must keep passing when only the proxy's service_id is wrong.
AUTH_DIRECT_CHECKS = {
    "test_auth.py::test_auth_service_health",
    "test_auth.py::test_key_validates[omitted-header]",
    "test_auth.py::test_key_validates[omitted-body]",
    "test_auth.py::test_key_validates[configured-header]",
    "test_auth.py::test_key_validates[configured-body]",
    "test_auth.py::test_validation_result_matches_contract",
    "test_auth.py::test_validate_rejects_malformed_body_with_422",
    "test_perf.py::test_auth_validation_latency",
}


def assert_healthy(run: LiveRun) -> None:
    """Every check passed; the SDK checks skip only when the SDK is not installed."""
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("error", 0) == 0, run.explain()
    assert outcomes.get("passed", 0) >= 20, outcomes
    assert run.outcomes("skipped") <= MAY_SKIP, run.explain()
    if SDK_INSTALLED:
        assert SDK_CHECKS <= run.outcomes("passed"), run.explain()
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert run.report is not None
    assert run.report["verdict"] == "pass", run.explain()
    assert run.report["diagnoses"] == [], run.explain()
    assert run.report["leftovers"] == [], run.report["leftovers"]  # a healthy deployment keeps nothing
    assert len(run.report["checks"]) == sum(outcomes.get(k, 0) for k in ("passed", "skipped", "failed", "error"))
    assert all(c["diagnosis"] is None for c in run.report["checks"]), run.explain()
    assert all("live" in c["markers"] for c in run.report["checks"]), run.report["checks"]


def assert_exactly_failed(run: LiveRun, expected: set[str], code: str) -> None:
    """Exactly ``expected`` failed, each with diagnosis ``code``; everything else passed (SDK: skipped)."""
    assert run.failed == expected, (
        f"unexpected failures: {sorted(run.failed - expected)}; expected but passed: "
        f"{sorted(expected - run.failed)}\n{run.explain()}"
    )
    assert run.outcomes("skipped") <= MAY_SKIP, run.explain()
    all_checks = {short_id(c["nodeid"]) for c in run.report["checks"]}
    assert run.outcomes("passed") == all_checks - expected - run.outcomes("skipped"), run.explain()
    assert run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == code, run.explain()
    diagnosed = {short_id(c["nodeid"]): c["diagnosis"] for c in run.report["checks"] if c["outcome"] == "failed"}
    assert set(diagnosed.values()) == {code}, diagnosed
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED


def registered_model_status(stack, key, name: str) -> int:
    """The proxy's status for ``registered-models/get?name=...`` with the key (404: no such model)."""
    url = f"{stack.tracking_uri}/api/2.0/mlflow/registered-models/get?{urllib.parse.urlencode({'name': name})}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key.reveal()}"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_healthy_stack_passes_every_check(run_live, e2e_stack, e2e_keys):
    started = time.time()
    run = run_live(*SMALL_EDGE_ARGS)

    assert_healthy(run)
    if SDK_INSTALLED:  # the SDK's registration events reached the API, as the SDK built them
        events = [e for e in e2e_stack.registration_events() if e["received_at"] >= started]
        by_model = {e["payload"]["model_name"]: e["payload"] for e in events}
        assert set(by_model) == {CANARY_MODEL, CANARY_CLI_MODEL}, events
        for payload in by_model.values():
            assert payload["token_id"].startswith("HOKUSAI-CHECK-"), payload
            assert payload["tags"]["hokusai_token_id"] == payload["token_id"], payload
            assert payload["tags"]["hokusai_status"] == "registered" and payload["mlflow_run_id"], payload
            assert payload["model_uri"] == f"models:/{payload['model_name']}/{payload['version']}", payload
            # cleaned up by the names the SDK really used
            assert registered_model_status(e2e_stack, e2e_keys.write, payload["model_name"]) == 404
    timings = run.report["timings"]
    assert timings["auth_validate_ms"]["n"] > 0 and timings["proxy_request_ms"]["n"] > 0, timings
    assert run.report["target"]["mode"] == "remote"
    assert "…" in run.report["target"]["key"], "the report must show the key masked"


def test_read_only_key_fails_exactly_the_write_checks(run_live, e2e_keys):
    run = run_live(*SMALL_EDGE_ARGS, env={"HOKUSAI_API_KEY": e2e_keys.readonly.reveal()})

    assert_exactly_failed(run, WRITE_CHECKS, "KEY_LACKS_WRITE_SCOPE")


def test_wrong_service_id_fails_exactly_the_proxy_checks(run_live):
    run = run_live(*SMALL_EDGE_ARGS, faults=["wrong-service-id"])

    assert_exactly_failed(run, PROXY_KEY_CHECKS, "SERVICE_ID_REJECTED")
    assert AUTH_DIRECT_CHECKS <= run.outcomes("passed"), run.explain()


SPY_PLUGIN = '''
"""Records every JSON report write (pid and xdist worker id) in HOKUSAI_E2E_WRITES."""
import os

import pytest_hokusai.report.json_report as json_report

_write = json_report.write_json_report


def _spy(path, report, *args, **kwargs):
    with open(os.environ["HOKUSAI_E2E_WRITES"], "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {os.environ.get('PYTEST_XDIST_WORKER', 'controller')}\\n")
    return _write(path, report, *args, **kwargs)


json_report.write_json_report = _spy
'''


@pytest.mark.slow
def test_xdist_run_gives_the_same_outcome_and_one_report(run_live, pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(hokusai_e2e_spy=SPY_PLUGIN)
    writes = pytester.path / "report-writes.log"

    run = run_live("-n", "2", "-p", "hokusai_e2e_spy", *SMALL_EDGE_ARGS, env={"HOKUSAI_E2E_WRITES": str(writes)})

    assert_healthy(run)
    assert "2 workers" in run.output or "created: 2/2 workers" in run.output, run.output
    lines = writes.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and lines[0].endswith(" controller"), lines
    assert run.output.count("hokusai json report:") == 1, run.output
