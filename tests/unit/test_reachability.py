"""The connect/first-byte budget bookkeeping (no network)."""

from __future__ import annotations

from pytest_hokusai.evidence import Exchange
from pytest_hokusai.reachability import HostReachability, cap_timeout, host_key


def test_cap_timeout_caps_both_parts():
    assert cap_timeout(10.0, 3.0) == (3.0, 3.0)
    assert cap_timeout(1.5, 3.0) == (1.5, 1.5)
    assert cap_timeout((2.0, 60.0), 3.0) == (2.0, 3.0)
    assert cap_timeout((None, None), 3.0) == (3.0, 3.0)
    assert cap_timeout(None, 3.0) == (3.0, 3.0)


def test_host_key_is_host_and_port():
    assert host_key("http://user:pw@127.0.0.1:8080/a?b=1") == "127.0.0.1:8080"
    assert host_key("https://registry.hokus.ai/api") == "registry.hokus.ai"


def test_budget_applies_until_the_host_answers():
    reach = HostReachability(2.5)
    assert reach.budget_for("http://a:1/health") == 2.5
    reach.mark_answered("http://a:1/anything")
    assert reach.budget_for("http://a:1/health") is None
    assert reach.budget_for("http://b:1/health") == 2.5


def test_only_a_timed_out_host_is_remembered_with_its_first_exchange_until_it_answers():
    reach = HostReachability(1.0)
    first = Exchange(method="GET", url="http://a:1/health", error="timeout", error_detail="x", elapsed_ms=1000.0)
    later = Exchange(method="GET", url="http://a:1/other", error="timeout", elapsed_ms=1000.0)
    refused = Exchange(method="GET", url="http://c:1/x", error="refused", elapsed_ms=1.0)
    answered = Exchange(method="GET", url="http://b:1/x", status=503, elapsed_ms=1.0)
    for ex in (first, later, refused, answered):
        reach.note_no_answer(ex)
    assert reach.silent_hosts() == {"a:1": first}
    reach.mark_answered("http://a:1/")
    assert reach.silent_hosts() == {}
