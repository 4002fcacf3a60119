"""Comparison with an earlier JSON report (--hokusai-baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.baseline import (
    BaselineDiff,
    baseline_p50,
    compare,
    load_baseline,
    regression,
    render_markdown,
    render_text,
    unit_of,
)
from pytest_hokusai.errors import SettingsError


def report(checks: dict[str, str], *, timings: dict[str, Any] | None = None, codes: tuple[str, ...] = (),
           verdict: str = "pass") -> dict[str, Any]:
    return {
        "schema": "pytest-hokusai/1",
        "verdict": verdict,
        "target": {"mode": "local"},
        "diagnoses": [{"code": c, "primary": i == 0} for i, c in enumerate(codes)],
        "checks": [{"nodeid": n, "outcome": o, "duration_s": 0.1, "markers": ["live"], "diagnosis": None}
                   for n, o in checks.items()],
        "timings": timings if timings is not None else {},
    }


def series(p50: float, n: int = 10) -> dict[str, float | int]:
    return {"p50": p50, "p95": p50 * 2, "n": n}


# -- load_baseline --------------------------------------------------------------------------
def test_load_baseline_reads_a_report(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(report({"a::t": "passed"}, timings={"proxy_request_ms": series(12)})))
    data = load_baseline(path)
    assert data["checks"][0]["nodeid"] == "a::t"
    assert baseline_p50(data, "proxy_request_ms") == 12.0


def test_load_baseline_fills_optional_blocks(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "pytest-hokusai/1", "checks": []}))
    assert load_baseline(path)["timings"] == {} and load_baseline(path)["diagnoses"] == []


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    (json.dumps({"schema": "other/1", "checks": []}), "has schema 'other/1'"),
    (json.dumps({"schema": "pytest-hokusai/2", "checks": []}), "not 'pytest-hokusai/1'"),
    (json.dumps({"schema": "pytest-hokusai/1"}), "has no 'checks' list"),
    (json.dumps({"schema": "pytest-hokusai/1", "checks": [{"nodeid": 3}]}), "malformed checks[0]"),
    (json.dumps({"schema": "pytest-hokusai/1", "checks": [], "timings": []}), "'timings' value"),
])
def test_load_baseline_errors_name_the_setting(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "old.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as info:
        load_baseline(path)
    text = str(info.value)
    assert message in text
    assert "--hokusai-baseline" in text and "HOKUSAI_BASELINE" in text and str(path) in text
    assert "--hokusai-report-json" in text  # the fix


def test_load_baseline_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        load_baseline(tmp_path)


# -- compare --------------------------------------------------------------------------------
def test_compare_sorts_checks_into_fixed_still_and_newly_failing() -> None:
    before = report({"fixed": "failed", "still": "failed", "errored": "error", "broke": "passed",
                     "skipped_then": "skipped", "gone": "failed", "was_failing_now_skipped": "failed"},
                    verdict="fail", codes=("KEY_REJECTED", "AUTH_BYPASS"))
    after = report({"fixed": "passed", "still": "failed", "errored": "failed", "broke": "failed",
                    "skipped_then": "error", "brand_new": "failed", "was_failing_now_skipped": "skipped"},
                   verdict="fail", codes=("AUTH_BYPASS", "RATE_LIMITED"))
    diff = compare(before, after)
    assert diff.fixed == ["fixed"]
    assert diff.still_failing == ["still", "errored"]
    assert diff.newly_failing == ["broke", "skipped_then", "brand_new"]
    assert diff.resolved_diagnoses == ["KEY_REJECTED"] and diff.new_diagnoses == ["RATE_LIMITED"]
    assert (diff.previous_verdict, diff.current_verdict) == ("fail", "fail")


def test_compare_latency_per_measure() -> None:
    before = report({}, timings={"auth_validate_ms": series(50), "proxy_request_ms": series(20),
                                 "registration_s": 4.0, "only_before_ms": series(3),
                                 "empty_ms": {"p50": 0, "p95": 0, "n": 0}})
    after = report({}, timings={"auth_validate_ms": series(55), "proxy_request_ms": series(80),
                                "registration_s": 3.0, "only_after_ms": series(9),
                                "empty_ms": series(5)})
    diff = compare(before, after)
    assert diff.latency == {"auth_validate_ms": (50.0, 55.0, 1.1), "proxy_request_ms": (20.0, 80.0, 4.0),
                            "registration_s": (4.0, 3.0, 0.75)}
    assert diff.regressions(2.0) == ["proxy_request_ms p50 80 ms is 4.00x the baseline's 20 ms (allowed: 2x)"]
    assert diff.regressions(5.0) == []


def test_compare_of_identical_reports_is_empty() -> None:
    same = report({"a": "passed", "b": "skipped"}, timings={"proxy_request_ms": series(10)})
    diff = compare(same, same)
    assert (diff.fixed, diff.still_failing, diff.newly_failing) == ([], [], [])
    assert diff.latency == {"proxy_request_ms": (10.0, 10.0, 1.0)}
    assert diff.regressions(1.5) == []


def test_to_dict_is_json_ready() -> None:
    diff = compare(report({"a": "failed"}, timings={"x_ms": series(10)}),
                   report({"a": "passed"}, timings={"x_ms": series(30)}))
    data = json.loads(json.dumps(diff.to_dict()))
    assert data["fixed"] == ["a"]
    assert data["latency"]["x_ms"] == {"before_p50": 10.0, "after_p50": 30.0, "factor": 3.0}


# -- regression and numbers -----------------------------------------------------------------
def test_regression_needs_the_factor_and_more_than_the_noise_floor() -> None:
    assert regression("proxy_request_ms", 100.0, 250.0, 2.0) is not None
    assert regression("proxy_request_ms", 100.0, 200.0, 2.0) is None  # exactly the factor is allowed
    assert regression("proxy_request_ms", 2.0, 6.0, 2.0) is None  # 3x, but only 4 ms: jitter
    assert regression("registration_s", 0.2, 0.6, 2.0) is None
    assert regression("registration_s", 3.0, 7.0, 2.0) == (
        "registration_s p50 7.00 s is 2.33x the baseline's 3.00 s (allowed: 2x)")
    assert regression("proxy_request_ms", None, 500.0, 2.0) is None
    assert regression("proxy_request_ms", 0.0, 500.0, 2.0) is None


def test_unit_and_p50_readers() -> None:
    assert (unit_of("auth_validate_ms"), unit_of("registration_s"), unit_of("count")) == ("ms", "s", "")
    data = {"timings": {"a_ms": series(7), "b_ms": {"p50": 4, "n": 0}, "c_s": 2.5, "d_s": 0.0, "e": "x",
                        "f": True}}
    assert baseline_p50(data, "a_ms") == 7.0
    assert baseline_p50(data, "c_s") == 2.5
    for name in ("b_ms", "d_s", "e", "f", "missing"):
        assert baseline_p50(data, name) is None
    assert baseline_p50({}, "a_ms") is None


# -- rendering ------------------------------------------------------------------------------
def test_render_text_lists_everything_and_flags_regressions() -> None:
    diff = compare(report({"t1": "failed", "t2": "failed"}, timings={"proxy_request_ms": series(20),
                                                                      "auth_validate_ms": series(40)},
                          verdict="fail", codes=("KEY_REJECTED",)),
                   report({"t1": "passed", "t2": "failed", "t3": "failed"},
                          timings={"proxy_request_ms": series(90), "auth_validate_ms": series(41)}, verdict="fail"))
    lines = render_text(diff, factor=2.0)
    text = "\n".join(lines)
    assert lines[0] == "verdict: FAIL at the baseline, FAIL now"
    assert "fixed since the baseline (1):\n  t1" in text
    assert "still failing (1):\n  t2" in text
    assert "newly failing (1):\n  t3" in text
    assert "diagnoses gone since: KEY_REJECTED" in text
    assert "  proxy_request_ms: 20 ms -> 90 ms (x4.50)  REGRESSION (over 2x)" in lines
    assert "  auth_validate_ms: 40 ms -> 41 ms (x1.02)" in lines


def test_render_text_without_anything_in_common() -> None:
    lines = render_text(BaselineDiff(previous_verdict="pass", current_verdict="pass"))
    assert "fixed since the baseline: none" in lines and "newly failing: none" in lines
    assert lines[-1] == "latency: no measure in common with the baseline"


def test_render_text_caps_long_lists() -> None:
    diff = BaselineDiff(newly_failing=[f"t{i}" for i in range(30)])
    lines = render_text(diff, limit=5)
    assert "newly failing (30):" in lines and "  ... and 25 more" in lines and "  t5" not in lines


def test_render_markdown_section() -> None:
    diff = compare(report({"t1": "failed"}, timings={"proxy_request_ms": series(20)}, verdict="fail"),
                   report({"t1": "passed"}, timings={"proxy_request_ms": series(100)}))
    lines = render_markdown(diff, factor=2.0)
    assert lines[0] == "## Compared with the baseline"
    assert "**Fixed since the baseline** (1):" in lines and "- `t1`" in lines
    assert "**Newly failing** (0): none" in lines
    assert "| `proxy_request_ms` | 20 ms | 100 ms | x5.00 **regression** |" in lines
