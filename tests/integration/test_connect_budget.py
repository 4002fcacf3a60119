"""The connect/first-byte budget against a real socket that accepts connections and never answers."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from pytest_hokusai.diagnosis import diagnose
from pytest_hokusai.diagnosis.probes import run_triage
from pytest_hokusai.evidence import Recorder
from pytest_hokusai.http import HokusaiSession
from pytest_hokusai.reachability import HostReachability, host_key
from pytest_hokusai.secret import Secret
from pytest_hokusai.settings import HokusaiKeys, resolve_settings
from tests.support.silent import silent_port
from tests.support.threadserver import serve_app


def _key() -> Secret:
    return Secret("hk_live_" + "Zq" * 16, source="test")


def test_first_request_to_a_silent_host_ends_at_the_budget_not_the_timeout():
    reach = HostReachability(0.5)
    recorder = Recorder()
    with silent_port() as url, HokusaiSession(timeout=30, recorder=recorder, reachability=reach) as session:
        started = time.monotonic()
        result = session.probe("GET", url + "/health", label="check:health")
        waited = time.monotonic() - started
    assert result.status is None and result.exchange.error == "timeout"
    assert waited < 30, "the per-request timeout applied, not the connect/first-byte budget"
    assert "0.5 s connect/first-byte budget" in (result.exchange.error_detail or "")
    assert "waited 0." in (result.exchange.error_detail or "")
    assert reach.silent_hosts() == {host_key(url): result.exchange}


def test_a_host_that_answered_gets_the_normal_timeout_afterwards():
    async def slow(request):
        import anyio

        await anyio.sleep(float(request.query_params.get("s", "0")))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/slow", slow)])
    reach = HostReachability(0.3)
    with serve_app(app) as base, HokusaiSession(timeout=10, reachability=reach) as session:
        assert session.probe("GET", base + "/slow").status == 200  # first contact, within the budget
        assert reach.budget_for(base) is None
        later = session.probe("GET", base + "/slow?s=0.8")  # longer than the budget: fine now
        assert later.status == 200, later.exchange.summary()


def test_triage_reuses_the_no_answer_and_diagnoses_host_unreachable_with_the_wait():
    with silent_port() as url:
        settings = resolve_settings({"hokusai_api_url": url, "hokusai_auth_url": url}, {}, {})
        keys = HokusaiKeys(primary=_key())
        reach = HostReachability(0.4)
        recorder = Recorder()
        with HokusaiSession(timeout=10, recorder=recorder, reachability=reach, key=keys.primary) as session:
            session.probe("GET", url + "/health", label="check:auth-health")
        silent = reach.silent_hosts()
        sent: list[str] = []

        def factory(**kwargs):
            session = HokusaiSession(recorder=recorder, reachability=reach, **kwargs)
            original = session.probe

            def probe(method, target, **kw):
                sent.append(target)
                return original(method, target, **kw)

            session.probe = probe  # type: ignore[method-assign]
            return session

        evidence = run_triage(settings, keys, factory, silent=silent)
    assert sent == [], f"the triage asked the silent host again: {sent}"
    findings = diagnose(evidence)
    primary = next(f for f in findings if f.primary)
    assert primary.code == "HOST_UNREACHABLE", [f.code for f in findings]
    assert "timed out after 0.4 s" in primary.summary or "timed out after 0.5 s" in primary.summary, primary.summary
