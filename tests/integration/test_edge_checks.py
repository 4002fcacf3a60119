"""The shipped edge and performance checks, run by pytester against the session's real local stack
(as a ``remote`` target pointed at its URLs), in the situations a healthy run never shows: a revoked
key still served from the validation cache, a proxy that validates nothing, a latency regression
against a baseline, and a baseline file that is not there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from pytest_hokusai.secret import Secret
    from pytest_hokusai.stack.launcher import Stack

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _served(stack: Stack, key: Secret) -> int:
    response = requests.get(stack.tracking_uri + SEARCH, headers={"Authorization": f"Bearer {key.reveal()}"},
                            timeout=10)
    return response.status_code


def run_checks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, stack: Stack, *args: str,
               revoked: Secret | None = None) -> tuple[pytest.RunResult, dict[str, Any]]:
    """Run the shipped checks in-process against ``stack``; return the result and the JSON report."""
    primary = stack.mint_key(name="edge-checks primary")
    monkeypatch.setenv("HOKUSAI_API_KEY", primary.reveal())
    for name in ("HOKUSAI_READONLY_API_KEY", "HOKUSAI_REVOKED_API_KEY", "HOKUSAI_EXPIRED_API_KEY",
                 "HOKUSAI_BASELINE", "HOKUSAI_TARGET"):
        monkeypatch.delenv(name, raising=False)
    if revoked is not None:
        monkeypatch.setenv("HOKUSAI_REVOKED_API_KEY", revoked.reveal())
    ini = pytester.makeini("[pytest]\n")
    report = pytester.path / "hokusai.json"
    result = pytester.runpytest(
        "-c", str(ini), "--rootdir", str(pytester.path), "-p", "no:cacheprovider",
        "--pyargs", "pytest_hokusai.checks",
        f"--hokusai-api-url={stack.api_url}", f"--hokusai-auth-url={stack.auth_url}",
        f"--hokusai-report-json={report}", *args,
    )
    return result, json.loads(report.read_text(encoding="utf-8"))


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {c["nodeid"].rsplit("::", 1)[-1]: c["outcome"] for c in report["checks"]}


def test_revoked_key_still_served_from_the_cache_is_revocation_delayed(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, healthy_stack: Stack) -> None:
    healthy_stack.set_faults(["revocation-delay"])  # successful validations are cached for an hour
    key = healthy_stack.mint_key(name="edge-checks revoked in use")
    assert _served(healthy_stack, key) == 200  # in use: now in the proxy's validation cache
    healthy_stack.revoke(key)
    started = time.monotonic()
    result, report = run_checks(pytester, monkeypatch, healthy_stack, "-m", "live and hokusai_edge",
                                "-k", "revoked", "--hokusai-revocation-wait-s=1", revoked=key)
    assert outcomes(report) == {"test_revoked_key_is_rejected": "failed"}
    expected = ("*REVOCATION_DELAYED: the revoked key hk_live_*is still served * after the first try "
                "(polled every 0.5 s for up to 1 s, --hokusai-revocation-wait-s)*")
    result.stdout.fnmatch_lines([expected])
    assert [d["code"] for d in report["diagnoses"] if d["primary"]] == ["REVOCATION_DELAYED"]
    assert time.monotonic() - started < 20
    assert key.reveal() not in result.stdout.str()


def test_a_proxy_that_validates_nothing_fails_every_key_check_with_auth_bypass(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, healthy_stack: Stack) -> None:
    revoked = healthy_stack.mint_key(name="edge-checks revoked")
    healthy_stack.revoke(revoked)
    healthy_stack.set_faults(["auth-bypass"])
    result, report = run_checks(pytester, monkeypatch, healthy_stack, "-m", "live and hokusai_edge",
                                "-k", "bad_key or revoked or expired", "--hokusai-revocation-wait-s=30",
                                revoked=revoked)
    got = outcomes(report)
    assert got == {"test_bad_key_is_rejected_with_401[malformed]": "failed",
                   "test_bad_key_is_rejected_with_401[unknown]": "failed",
                   "test_bad_key_is_rejected_with_401[none]": "failed",
                   "test_revoked_key_is_rejected": "failed",
                   # remote target without HOKUSAI_EXPIRED_API_KEY: skipped, naming both ways out
                   "test_expired_key_is_rejected": "skipped"}
    text = result.stdout.str()
    assert "AUTH_BYPASS: the proxy served MLflow to a request with no key" in text
    assert "AUTH_BYPASS: the revoked key" in text and "the proxy does not validate keys at all" in text
    revoked_check = next(c for c in report["checks"] if c["nodeid"].endswith("test_revoked_key_is_rejected"))
    assert revoked_check["duration_s"] < 10, "an unvalidated proxy is reported at once, without polling"
    assert [d["code"] for d in report["diagnoses"] if d["primary"]] == ["AUTH_BYPASS"]


def test_latency_regression_against_a_baseline_fails_naming_both_numbers(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, healthy_stack: Stack, tmp_path: Path) -> None:
    from pytest_hokusai.baseline import NOISE_FLOOR

    monkeypatch.setitem(NOISE_FLOOR, "ms", 0.0)  # the in-process run reads it: no machine is too fast
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({
        "schema": "pytest-hokusai/1", "verdict": "pass", "diagnoses": [], "checks": [],
        "timings": {"proxy_request_ms": {"p50": 0.01, "p95": 0.02, "n": 30},
                    "auth_validate_ms": {"p50": 100000.0, "p95": 100000.0, "n": 20}},
    }))
    result, report = run_checks(pytester, monkeypatch, healthy_stack, "-m", "live and hokusai_perf",
                                "-k", "latency", f"--hokusai-baseline={baseline}")
    assert outcomes(report) == {"test_auth_validation_latency": "passed", "test_proxy_request_latency": "failed"}
    expected = "*proxy regressed since the baseline: proxy_request_ms p50 * ms is *x the baseline's 0.01 ms (allowed: 2x)*"
    result.stdout.fnmatch_lines([expected])
    assert report["timings"]["proxy_request_ms"]["n"] >= 30


def test_budget_miss_and_missing_baseline_fail_with_the_numbers(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, healthy_stack: Stack, tmp_path: Path) -> None:
    result, report = run_checks(pytester, monkeypatch, healthy_stack, "-m", "live and hokusai_perf",
                                "-k", "auth_validation", "--hokusai-budget-auth-ms=0.001")
    assert outcomes(report) == {"test_auth_validation_latency": "failed"}
    result.stdout.fnmatch_lines(["*auth validation p95 * ms over the 0.001 ms budget (p50 * ms, n=20)*"])
    # A baseline that does not exist is a usage error before any check runs, naming the setting.
    missing = tmp_path / "nope.json"
    ini = pytester.makeini("[pytest]\n")
    result = pytester.runpytest("-c", str(ini), "--rootdir", str(pytester.path), "-p", "no:cacheprovider",
                                "--pyargs", "pytest_hokusai.checks", "-m", "live and hokusai_perf",
                                f"--hokusai-api-url={healthy_stack.api_url}",
                                f"--hokusai-auth-url={healthy_stack.auth_url}", f"--hokusai-baseline={missing}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*The baseline report '{missing}' given by --hokusai-baseline*does not exist*"])
