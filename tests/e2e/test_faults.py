"""Every fault switch of the stack, end to end (issue 4): the run fails and names the right root cause.

For each fault in :data:`pytest_hokusai.stack.faults.FAULTS` the shared stack is switched to it,
the live suite runs in a subprocess, and the JSON report must say ``verdict: fail`` with the
fault's code as the first and only primary diagnosis, and every failing check must carry a
diagnosis code.

Selection (time): a whole-suite run costs 15-20 s on two cores, almost all of it the MLflow client
and the toy model (mlflow and scikit-learn imports, training). The checks that need no MLflow
client (``FAST_SELECTION``: auth, Bearer, proxy, key edge cases, latency; about 3 s a run) show
every fault except the two that only writes reveal (``write-scope``, ``artifacts-disabled``),
which add the registration checks (``WITH_REGISTRATION``). The whole suite is run against the
healthy stack, a read-only key and a faulted proxy in test_live_suite.py.

"Healthy gives pass and no findings in 5 runs in a row" runs the fast selection five times
(about 15 s) rather than the whole suite (about 90 s), for the same reason.
"""

from __future__ import annotations

import urllib.request

import pytest

from pytest_hokusai.stack.faults import FAULTS

from .conftest import FAST_SELECTION, RUN_TIMEOUT_S, WITH_REGISTRATION, LiveRun

#: Faults that no plain HTTP check sees: only MLflow writes (experiment create, artifact upload) fail.
NEEDS_REGISTRATION = {"write-scope", "artifacts-disabled", "artifact-path-untranslated"}
#: Faults only a delete through the proxy reveals: the hokusai_proxy delete check (MLflow client).
NEEDS_PROXY_DELETE = {"drop-delete-body"}
PROXY_DELETE_SELECTION = ("-m", "live and hokusai_proxy", "-k", "mlflow_client_deletes or api_health")
#: Faults only the SDK sees (its registration event): end to end in test_sdk.py, with the SDK's checks.
SDK_EVENT_FAULTS = {"events-route-missing", "events-hook-fails"}
HEALTHY_RUNS = 5
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _warm_then_revoke(stack) -> str:
    """Mint a key, let the proxy validate (and cache) it with one request, revoke it; return it raw."""
    key = stack.mint_key(scopes=("read", "write"), name="e2e revoked-while-cached key")
    request = urllib.request.Request(stack.tracking_uri + SEARCH, headers={"Authorization": f"Bearer {key.reveal()}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=RUN_TIMEOUT_S) as response:
        assert response.status == 200, "the fresh key must be served before it is revoked"
    stack.revoke(key)
    return key.reveal()


def assert_diagnosed(run: LiveRun, code: str) -> None:
    assert run.report is not None, run.output
    assert run.report["verdict"] == "fail", run.explain()
    assert run.primary["code"] == code, run.explain()
    assert run.primary["evidence"] and run.primary["remediation"], run.primary
    failing = [c for c in run.report["checks"] if c["outcome"] in ("failed", "error")]
    assert failing, run.explain()
    undiagnosed = [c["nodeid"] for c in failing if not c["diagnosis"]]
    assert not undiagnosed, f"failing checks without a diagnosis: {undiagnosed}\n{run.explain()}"
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.output


@pytest.mark.parametrize("name", sorted(set(FAULTS) - SDK_EVENT_FAULTS))
def test_fault_is_diagnosed(run_live, e2e_stack, name):
    fault = FAULTS[name]
    selection = WITH_REGISTRATION if name in NEEDS_REGISTRATION else FAST_SELECTION
    if name in NEEDS_PROXY_DELETE:
        selection = PROXY_DELETE_SELECTION
    env: dict[str, str | None] = {}
    args: list[str] = []
    if name == "revocation-delay":
        e2e_stack.set_faults([name])
        env["HOKUSAI_REVOKED_API_KEY"] = _warm_then_revoke(e2e_stack)
        args.append("--hokusai-revocation-wait-s=1")  # the check polls this long before it reports
        run = run_live(*selection, *args, env=env)
    else:
        run = run_live(*selection, faults=[name])

    assert_diagnosed(run, fault.code)
    if name == "revocation-delay":
        assert "test_edge.py::test_revoked_key_is_rejected" in run.failed, run.explain()


@pytest.mark.slow
def test_healthy_stack_gives_no_findings_five_runs_in_a_row(run_live):
    for attempt in range(1, HEALTHY_RUNS + 1):
        run = run_live(*FAST_SELECTION)
        assert run.report is not None, run.output
        assert run.report["verdict"] == "pass" and run.report["diagnoses"] == [], (
            f"run {attempt} of {HEALTHY_RUNS}:\n{run.explain()}"
        )
        assert run.failed == set(), run.explain()
        assert run.result.ret == pytest.ExitCode.OK, run.output
