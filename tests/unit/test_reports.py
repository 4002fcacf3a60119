"""Unit tests of the report layer: JSON (schema pytest-hokusai/1), Markdown, chart, pytest-html parts.

No network, no processes. Key-shaped constants are built at run time, never written literally.
"""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_metadata.plugin import metadata_key

from pytest_hokusai.evidence import Exchange
from pytest_hokusai.report import SCHEMA, build_json_report, render_markdown, scrub, write_json_report
from pytest_hokusai.report.chart import (
    endpoint_template,
    latency_by_endpoint,
    latency_chart_data_uri,
    latency_chart_png,
)
from pytest_hokusai.report.html import (
    REPORT_ATTR,
    HokusaiHtmlExtras,
    HokusaiHtmlPlugin,
    attach_extras,
    exchanges_html,
    redact_metadata,
    summary_html,
)
from pytest_hokusai.report.json_report import ADDED_KEYS, COUNTED_OUTCOMES, TARGET_KEYS, TOP_LEVEL_KEYS
from pytest_hokusai.report.markdown import cell, write_markdown
from pytest_hokusai.secret import Secret
from pytest_hokusai.settings import HokusaiSettings
from pytest_hokusai.state import CheckResult, Finding, RunState

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_key(tail: str = "wxyz", filler: str = "Q") -> str:
    """A well-formed key built at run time (32 alphanumerics after the prefix)."""
    return "hk_live_" + filler * 28 + tail


@pytest.fixture
def settings() -> HokusaiSettings:
    return HokusaiSettings(
        target="local", api_url="http://127.0.0.1:8001", auth_url="http://127.0.0.1:8002",
        tracking_uri="http://127.0.0.1:8001/api/mlflow", direct_mlflow_url="http://127.0.0.1:8001/mlflow",
    )


def healthy_state() -> RunState:
    state = RunState()
    state.record_check(CheckResult("checks/test_auth.py::test_validate", "passed", 0.12, ["live", "auth"]))
    state.record_check(CheckResult("checks/test_reg.py::test_register", "passed", 3.5, ["live", "registration"]))
    for value in (10.0, 12.0, 30.0):
        state.time("auth_validate_ms", value)
        state.time("proxy_request_ms", value * 2)
    state.registration_s = 3.4567
    return state


def failing_state(evidence_extra: str = "") -> RunState:
    state = RunState()
    state.record_check(CheckResult("checks/test_auth.py::test_validate", "failed", 0.2, ["live", "auth"],
                                   diagnosis="SERVICE_ID_REJECTED"))
    state.record_check(CheckResult("checks/test_reg.py::test_register", "passed", 1.0, ["live"]))
    # the consequence first, the primary second: the report must put the primary first
    state.findings.append(Finding("KEY_REJECTED", "credentials", "The proxy rejects the key | everywhere.",
                                  ["GET http://127.0.0.1:8001/api/mlflow/x -> 401"], "Check the key."))
    state.findings.append(Finding(
        "SERVICE_ID_REJECTED", "configuration", "The key validates without service_id but not with 'platform'.",
        ["POST http://127.0.0.1:8002/api/v1/keys/validate -> 401 {\"detail\": \"Invalid\"}" + evidence_extra],
        "Set the key's service_id to platform in the auth service, or run with --hokusai-service-id.",
        primary=True,
    ))
    state.time("auth_validate_ms", 5.0)
    return state


# -- JSON ----------------------------------------------------------------------------------------
def assert_schema(report: dict[str, Any]) -> None:
    assert tuple(report)[: len(TOP_LEVEL_KEYS)] == TOP_LEVEL_KEYS  # added keys follow (DESIGN.md)
    assert isinstance(report["leftovers"], list)
    for left in report["leftovers"]:
        assert {"kind", "name", "why"} <= set(left)
    assert set(ADDED_KEYS) <= set(report), "the keys added since are there"
    for name in ("started_at", "finished_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", report[name]), report[name]
    assert report["started_at"] <= report["finished_at"]
    assert isinstance(report["duration_s"], float) and report["duration_s"] >= 0
    assert set(COUNTED_OUTCOMES) <= set(report["counts"])
    assert sum(report["counts"].values()) == len(report["checks"])
    assert set(report["versions"]) == {"plugin", "python", "mlflow", "sdk"}
    assert report["versions"]["python"] and report["versions"]["plugin"]
    assert report["schema"] == SCHEMA == "pytest-hokusai/1"
    assert report["verdict"] in ("pass", "fail")
    assert tuple(report["target"])[: len(TARGET_KEYS)] == TARGET_KEYS
    for diag in report["diagnoses"]:
        assert {"code", "category", "primary", "summary", "evidence", "remediation", "owner"} <= set(diag)
        assert isinstance(diag["accepted"], bool)
        assert isinstance(diag["primary"], bool) and isinstance(diag["evidence"], list)
    for check in report["checks"]:
        assert set(check) == {"nodeid", "outcome", "duration_s", "markers", "diagnosis"}
        assert check["outcome"] in ("passed", "failed", "skipped", "error")
        assert isinstance(check["duration_s"], float) and isinstance(check["markers"], list)
        assert check["diagnosis"] is None or isinstance(check["diagnosis"], str)
    timings = report["timings"]
    assert list(timings)[:3] == ["auth_validate_ms", "proxy_request_ms", "registration_s"]
    for name in ("auth_validate_ms", "proxy_request_ms"):
        assert set(timings[name]) == {"p50", "p95", "n"}
    assert timings["registration_s"] is None or isinstance(timings["registration_s"], float)
    json.dumps(report)  # serialisable as is


def test_json_report_healthy(settings: HokusaiSettings) -> None:
    key = Secret(make_key("h1ok"))
    report = build_json_report(healthy_state(), settings, {"key": key, "versions": {"mlflow": "3.9.0"}})
    assert_schema(report)
    assert report["verdict"] == "pass"
    assert report["diagnoses"] == []
    assert report["target"]["mode"] == "local"
    assert report["target"]["api_url"] == "http://127.0.0.1:8001"
    assert report["target"]["key"] == key.masked
    assert report["target"]["versions"] == {"mlflow": "3.9.0"}
    assert [c["outcome"] for c in report["checks"]] == ["passed", "passed"]
    assert report["timings"]["auth_validate_ms"] == {"p50": 12.0, "p95": 30.0, "n": 3}
    assert report["timings"]["registration_s"] == 3.457


def test_json_report_failing_has_one_primary_first(settings: HokusaiSettings) -> None:
    state = failing_state()
    report = build_json_report(state, settings)
    assert_schema(report)
    assert report["verdict"] == "fail"
    assert [d["code"] for d in report["diagnoses"]] == ["SERVICE_ID_REJECTED", "KEY_REJECTED"]
    assert [d["primary"] for d in report["diagnoses"]] == [True, False]
    assert report["target"]["key"] is None
    assert report["checks"][0]["diagnosis"] == "SERVICE_ID_REJECTED"
    assert state.findings[0].code == "KEY_REJECTED"  # the state itself is not reordered


def test_json_report_promotes_a_primary_when_none_is_marked(settings: HokusaiSettings) -> None:
    state = RunState()
    state.findings.append(Finding("UNEXPECTED_RESPONSE", "other", "odd"))
    state.findings.append(Finding("RATE_LIMITED", "credentials", "429"))
    report = build_json_report(state, settings)
    assert [d["primary"] for d in report["diagnoses"]] == [True, False]


def test_json_report_masks_raw_key_in_target(settings: HokusaiSettings) -> None:
    raw = make_key("t4rg", filler="R")
    report = build_json_report(RunState(), settings, {"key": raw})
    assert raw not in json.dumps(report, ensure_ascii=False)
    assert report["target"]["key"].endswith("t4rg")


def test_write_json_report_atomic_and_redacted(settings: HokusaiSettings, tmp_path: Path) -> None:
    known = Secret(make_key("kn0w", filler="K"))
    unknown = make_key("unkn", filler="U")  # never registered as a Secret: caught by its shape
    state = failing_state(evidence_extra=f" key={known.reveal()} other={unknown}")
    report = build_json_report(state, settings)
    report["diagnoses"][0]["summary"] += " " + known.reveal()  # planted after building
    path = tmp_path / "deep" / "dir" / "report.json"
    path.parent.mkdir(parents=True)
    path.write_text("old", encoding="utf-8")
    before = set(os.listdir(path.parent))

    assert write_json_report(path, report) == path

    text = path.read_text(encoding="utf-8")
    assert known.reveal() not in text and unknown not in text
    assert known.reveal()[8:] not in text  # not even the secret part
    assert "kn0w" in text and "unkn" in text  # masked forms remain
    loaded = json.loads(text)
    assert_schema(loaded)
    assert set(os.listdir(path.parent)) == before  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_json_report_leaves_old_file_when_serialising_fails(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("previous", encoding="utf-8")

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_report(path, {"schema": SCHEMA, "bad": Boom()})
    assert path.read_text(encoding="utf-8") == "previous"
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_json_report_creates_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "r.json"
    write_json_report(path, {"schema": SCHEMA})
    assert json.loads(path.read_text(encoding="utf-8")) == {"schema": SCHEMA}


def test_scrub_masks_known_and_key_shaped_values() -> None:
    known = Secret(make_key("s3cr", filler="S"))
    shaped = "hk_test_" + "Z" * 30 + "abcd"
    out = scrub(f"a {known.reveal()} b {shaped} c {known.reveal()[8:]}")
    assert known.reveal() not in out and shaped not in out and known.reveal()[8:] not in out
    assert "hk_test_\u2026abcd" in out


# -- Markdown ------------------------------------------------------------------------------------
def test_markdown_failing(settings: HokusaiSettings) -> None:
    key = Secret(make_key("mdk1", filler="M"))
    report = build_json_report(failing_state(), settings, {"key": key})
    text = render_markdown(report, generated_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    assert "2025-03-04T05:06:07Z" in text
    assert "## Verdict: \u274c **FAIL**" in text
    assert "### Root cause: `SERVICE_ID_REJECTED` (configuration)" in text
    assert "**Remedy:** Set the key's service_id to platform" in text
    assert '- `POST http://127.0.0.1:8002/api/v1/keys/validate -> 401 {"detail": "Invalid"}`' in text
    assert "### Other findings" in text and "#### `KEY_REJECTED`" in text
    assert "| checks/test_auth.py::test_validate | live, auth | failed | 0.20 s | SERVICE_ID_REJECTED |" in text
    assert "| auth_validate_ms | 5 | 5 | 1 |" in text
    assert f"| API key | {key.masked} |" in text
    assert text.index("Root cause") < text.index("Other findings") < text.index("## Checks")


def test_markdown_escapes_pipes_and_redacts(settings: HokusaiSettings) -> None:
    raw = make_key("p1pe", filler="P")
    state = healthy_state()
    state.record_check(CheckResult("checks/t.py::test_x[a|b]", "skipped", 0.0, ["live"]))
    report = build_json_report(state, settings)
    report["target"]["note"] = f"left|right {raw}"
    text = render_markdown(report, generated_at=datetime(2025, 1, 1))
    assert "checks/t.py::test_x[a\\|b]" in text
    assert "left\\|right" in text
    assert raw not in text
    assert "## Verdict: \u2705 **PASS**" in text
    assert "No finding" in text
    assert "Registration (train, log, register, verify): 3.46 s" in text
    assert "2025-01-01T00:00:00Z" in text  # naive timestamps are UTC
    # every table row has the same number of unescaped separators as its header
    for line in text.splitlines():
        if line.startswith("| checks/"):
            assert line.replace("\\|", "").count("|") == 6


def test_a_run_whose_live_checks_all_skipped_is_not_called_passed(settings: HokusaiSettings) -> None:
    # The verdict of an all-skipped run is FAIL (a gate never passes by skipping): no output may say
    # that every check passed.
    state = RunState()
    for name in ("test_a", "test_b"):
        state.record_check(CheckResult(f"checks/t.py::{name}", "skipped", 0.0, ["live"], message="no SDK"))
    assert state.verdict == "fail" and not state.findings
    report = build_json_report(state, settings)
    text = render_markdown(report, generated_at=datetime(2025, 1, 1))
    html = summary_html(report)
    for output in (text, html):
        assert "every selected live check passed" not in output
        assert "every selected live check skipped (2 live checks)" in output and "nothing was verified" in output
    assert "No diagnosis was made" not in text and "No diagnosis was made" not in html


def test_no_finding_sentence_follows_the_verdict_and_the_outcomes() -> None:
    from pytest_hokusai.report.verdict_text import count_outcomes, no_finding_sentence

    def said(verdict: str, *outcomes: str) -> str:
        return no_finding_sentence(verdict, count_outcomes(outcomes))

    assert said("pass", "passed", "passed") == "No finding: every selected live check passed."
    assert said("pass", "passed", "skipped") == "No finding: 1 live check passed, 1 skipped."
    assert "every selected live check skipped (1 live check)" in said("fail", "skipped")
    assert "no live check ran" in said("fail")
    assert said("fail", "failed", "skipped") == "No diagnosis was made; see the failed checks below."


def test_markdown_cell_and_write(tmp_path: Path) -> None:
    assert cell("a|b\nc") == "a\\|b c"
    assert cell(None) == "\u2014"
    raw = make_key("wr1t", filler="W")
    path = write_markdown(tmp_path / "out" / "TEST_RESULTS.md", f"# t\n{raw}\n")
    text = path.read_text(encoding="utf-8")
    assert raw not in text and "wr1t" in text


# -- chart ---------------------------------------------------------------------------------------
def test_endpoint_template_collapses_ids() -> None:
    base = "http://127.0.0.1:5123/api/mlflow/api/2.0/mlflow"
    assert endpoint_template("get", f"{base}/runs/get?run_id=0a1b2c3d4e5f60718293a4b5c6d7e8f9") == \
        "GET 127.0.0.1:5123/api/mlflow/api/2.0/mlflow/runs/get?run_id=*"
    assert endpoint_template("GET", "https://h.example/m/3f2504e0-4f89-11d3-9a0c-0305e82c3301/v/12") == \
        "GET h.example/m/{uuid}/v/{n}"
    assert endpoint_template("DELETE", "https://h.example/models/hokusai-check-1718000000-ab12") == \
        "DELETE h.example/models/{name}"


def test_latency_by_endpoint_groups_and_skips_errors() -> None:
    base = "http://127.0.0.1:5123/api/mlflow/api/2.0/mlflow/registered-models/get"
    exchanges = [
        Exchange("GET", f"{base}?name=hokusai-check-{i}-abcd", status=200, elapsed_ms=10.0 + i)
        for i in range(3)
    ]
    exchanges.append(Exchange("POST", "http://127.0.0.1:5124/api/v1/keys/validate", status=401, elapsed_ms=4.0))
    exchanges.append(Exchange("POST", "http://127.0.0.1:5124/api/v1/keys/validate", error="timeout",
                              elapsed_ms=10000.0))
    series = latency_by_endpoint(exchanges)
    assert series == {
        "GET 127.0.0.1:5123/api/mlflow/api/2.0/mlflow/registered-models/get?name=*": [10.0, 11.0, 12.0],
        "POST 127.0.0.1:5124/api/v1/keys/validate": [4.0],
    }


def test_latency_chart_png_and_data_uri() -> None:
    png = latency_chart_png({"GET a/x": [1.0, 2.0, 50.0], "POST a/y": [7.0]})
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert latency_chart_png({}).startswith(PNG_MAGIC)
    uri = latency_chart_data_uri({"GET a/x": [3.0]})
    assert uri.startswith("data:image/png;base64,iVBORw0KGgo")


# -- pytest-html parts ---------------------------------------------------------------------------
def test_summary_html_failing_has_ids_and_no_raw_key(settings: HokusaiSettings) -> None:
    key = Secret(make_key("htm1", filler="H"))
    unknown = make_key("unk2", filler="N")
    state = failing_state(evidence_extra=f" sent {key.reveal()} and {unknown} <script>")
    report = build_json_report(state, settings, {"key": key})
    report["diagnoses"][0]["evidence"].append(f"planted later {key.reveal()}")
    html = summary_html(report, chart_uri="data:image/png;base64,AAAA")
    assert key.reveal() not in html and unknown not in html and key.reveal()[8:] not in html
    assert 'id="hokusai-verdict" class="hk-fail">FAIL<' in html
    assert 'id="hokusai-primary" data-code="SERVICE_ID_REJECTED"' in html
    assert "Remedy:</b> Set the key&#x27;s service_id" in html
    assert 'id="hokusai-findings"' in html and "KEY_REJECTED" in html
    assert 'id="hokusai-timings"' in html
    assert '<img id="hokusai-latency-chart"' in html and 'src="data:image/png;base64,AAAA"' in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert key.masked in html
    # the verdict and root cause come before the timings and the chart (visible without scrolling)
    assert html.index("hokusai-verdict") < html.index("hokusai-primary") < html.index("hokusai-timings")


def test_summary_html_pass() -> None:
    report = {"schema": SCHEMA, "verdict": "pass", "target": {"mode": "remote", "key": None},
              "diagnoses": [], "checks": [{"outcome": "passed"}], "timings": {"registration_s": 1.5}}
    html = summary_html(report)
    assert 'class="hk-pass">PASS<' in html
    assert "No finding" in html and "hokusai-findings" not in html
    assert "<img" not in html  # no chart given


def test_exchanges_html_escapes_and_redacts() -> None:
    key = Secret(make_key("exc1", filler="E"))
    exchanges = [
        Exchange("POST", "http://127.0.0.1:1/api/v1/keys/validate", status=401,
                 body_excerpt=f'{{"detail": "bad <b>{key.reveal()}</b>"}}', elapsed_ms=12.4,
                 auth=f"Bearer {key.masked}"),
        Exchange("GET", "http://127.0.0.1:2/health", error="refused", error_detail="connection refused"),
    ]
    html = exchanges_html(exchanges, Finding("AUTH_SERVICE_DOWN", "deployment", "auth is down", [], "Start it."))
    assert key.reveal() not in html
    assert "&lt;b&gt;" in html and "<b>hk_" not in html
    assert "<td>401</td>" in html and "refused: connection refused" in html and "<td>12</td>" in html
    assert 'data-code="AUTH_SERVICE_DOWN"' in html and "Start it." in html
    many = exchanges_html([exchanges[0]] * 5, limit=2)
    assert many.count("<tr><td>") == 2 and "3 more exchange(s) not shown" in many


def test_attach_extras_uses_report_extras() -> None:
    report: Any = SimpleNamespace(extras=[{"format_type": "text", "content": "x"}])
    attach_extras(report, [Exchange("GET", "http://127.0.0.1/x", status=200)], "PROXY_STRIPS_AUTH")
    assert len(report.extras) == 2
    assert report.extras[1]["format_type"] == "html"
    assert "PROXY_STRIPS_AUTH" in report.extras[1]["content"]
    assert getattr(report, REPORT_ATTR) == "PROXY_STRIPS_AUTH"
    assert not hasattr(report, "extra")
    empty: Any = SimpleNamespace()
    attach_extras(empty, [], None)
    assert not hasattr(empty, "extras")


def test_metadata_redaction() -> None:
    key = Secret(make_key("meta", filler="D"))
    metadata: dict[str, Any] = {
        "HOKUSAI_API_KEY": key.reveal(),
        "github_token": "ghp_something",
        "Db Password": "pw",
        "Python": "3.11",
        "Notes": f"ran with {key.reveal()}",
        "Plugins": {"html": "4.2", "ci_secret": "s3"},
        "Args": ["-m", key.reveal()],
    }
    redact_metadata(metadata)
    assert metadata["HOKUSAI_API_KEY"] == metadata["github_token"] == metadata["Db Password"] == "***"
    assert metadata["Python"] == "3.11"
    assert metadata["Notes"] == f"ran with {key.masked}"
    assert metadata["Plugins"] == {"html": "4.2", "ci_secret": "***"}
    assert metadata["Args"] == ["-m", key.masked]


def test_html_plugin_hooks(settings: HokusaiSettings) -> None:
    key = Secret(make_key("plg1", filler="G"))
    report = build_json_report(failing_state(), settings, {"key": key})
    exchanges = [Exchange("GET", "http://127.0.0.1:9/api/mlflow/x", status=401, elapsed_ms=3.0)]
    plugin = HokusaiHtmlPlugin(lambda: report, lambda: exchanges)
    html_report = SimpleNamespace(title="pytest-html")
    plugin.pytest_html_report_title(html_report)
    assert html_report.title == "Hokusai live checks"
    prefix: list[str] = ["other plugin"]
    # as after xdist merged a worker's unredacted metadata into the controller's at testnodedown
    merged = {"HOKUSAI_API_KEY": key.reveal(), "Notes": "with " + key.reveal()}
    session: Any = SimpleNamespace(config=SimpleNamespace(stash={metadata_key: merged}))
    plugin.pytest_html_results_summary(prefix, [], [], session)
    assert merged == {"HOKUSAI_API_KEY": "***", "Notes": "with " + key.masked}
    assert len(prefix) == 2 and prefix[1] == "other plugin"
    assert '<img id="hokusai-latency-chart" alt="Latency per endpoint (p50, p95)" ' \
           'src="data:image/png;base64,iVBORw0KGgo' in prefix[0]
    assert html_report.title == "Hokusai live checks: FAIL (SERVICE_ID_REJECTED)"
    header = ["r", "t", "d", "l"]
    plugin.pytest_html_results_table_header(header)
    row = ["r", "t", "d", "l"]
    plugin.pytest_html_results_table_row(SimpleNamespace(**{REPORT_ATTR: "KEY_REJECTED"}), row)  # type: ignore[arg-type]
    assert "Diagnosis" in header[2] and row[2] == '<td class="col-diagnosis">KEY_REJECTED</td>'
    metadata = {"HOKUSAI_API_KEY": key.reveal()}
    plugin.pytest_metadata(metadata)
    assert metadata == {"HOKUSAI_API_KEY": "***"}


def test_extras_plugin_makereport_wrapper() -> None:
    calls: list[str] = []

    def exchanges_for(nodeid: str) -> list[Exchange]:
        calls.append(nodeid)
        return [Exchange("GET", "http://127.0.0.1/x", status=502, elapsed_ms=1.0, nodeid=nodeid)]

    plugin = HokusaiHtmlExtras(exchanges_for, lambda nodeid: "MLFLOW_UNREACHABLE")
    item: Any = SimpleNamespace(nodeid="t.py::test_a")
    for when, passed, expect in (("setup", True, 0), ("call", False, 1), ("teardown", True, 0)):
        report: Any = SimpleNamespace(when=when, passed=passed, extras=[])
        gen = plugin.pytest_runtest_makereport(item, None)  # type: ignore[arg-type]
        next(gen)
        with pytest.raises(StopIteration) as stop:
            gen.send(report)
        assert stop.value.value is report
        assert len(report.extras) == expect
    assert calls == ["t.py::test_a"]
    assert getattr(report, REPORT_ATTR, None) is None  # teardown report untouched


def test_timings_without_samples_show_a_dash(settings: HokusaiSettings) -> None:
    report = build_json_report(RunState(), settings)
    html = summary_html(report)
    assert ("<tr><td>proxy_request_ms</td><td>\u2014</td><td>\u2014</td><td>0</td><td>2000 ms</td>"
            '<td class="hk-result">not measured</td></tr>') in html
    assert ('<td colspan="3">not measured</td><td>120 s</td><td class="hk-result">not measured</td>'
            in html)  # registration not measured
    text = render_markdown(report, generated_at=datetime(2025, 1, 1))
    assert "| proxy_request_ms | \u2014 | \u2014 | 0 |" in text
    assert "Registration (train, log, register, verify): not measured" in text
    assert "## Verdict: \u274c **FAIL**" in text  # nothing ran: a gate never passes by skipping


def test_json_report_never_measured_is_null_and_run_facts_are_there(settings: HokusaiSettings) -> None:
    state = RunState()
    state.record_check(CheckResult("c.py::test_a", "passed", 0.1, ["live"]))
    state.record_check(CheckResult("c.py::test_b", "skipped", 0.0, ["live"]))
    state.record_check(CheckResult("c.py::test_c", "error", 0.0, ["live"], diagnosis="SUITE_ERROR"))
    state.started_at, state.finished_at = 1_796_000_000.0, 1_796_000_012.5
    report = build_json_report(state, settings)
    assert_schema(report)
    assert report["timings"]["auth_validate_ms"] == {"p50": None, "p95": None, "n": 0}
    assert report["timings"]["proxy_request_ms"] == {"p50": None, "p95": None, "n": 0}
    assert report["timings"]["registration_s"] is None
    assert report["started_at"] == "2026-11-30T00:53:20.000Z"
    assert report["finished_at"] == "2026-11-30T00:53:32.500Z"
    assert report["duration_s"] == 12.5
    assert report["counts"] == {"passed": 1, "failed": 0, "skipped": 1, "error": 1}
    assert report["budgets"] == {"auth_validate_ms": settings.budget_auth_ms,
                                 "proxy_request_ms": settings.budget_proxy_ms,
                                 "registration_s": settings.budget_registration_s}
    markdown = render_markdown(report, generated_at=datetime(2026, 12, 9, tzinfo=timezone.utc))
    assert "not measured" in markdown and "None" not in markdown


def test_measures_table_has_budget_and_result(settings: HokusaiSettings) -> None:
    state = RunState()
    for value in (5.0, 7.0, 1500.0):
        state.time("auth_validate_ms", value)
    state.time("proxy_request_ms", 12.0)
    state.registration_s = 3.5
    html = summary_html(build_json_report(state, settings))
    table = html.split('<table id="hokusai-timings">', 1)[1].split("</table>", 1)[0]
    assert "<th>budget</th><th>result</th>" in table
    assert "<td>auth_validate_ms</td>" in table and "<td>1000 ms</td>" in table
    rows = {row.split("</td>", 1)[0]: row for row in table.split("<tr><td>")[1:]}
    assert "over budget" in rows["auth_validate_ms"]  # p95 1500 ms > 1000 ms
    assert "within budget" in rows["proxy_request_ms"]
    assert "within budget" in rows["registration_s"] and "120 s" in rows["registration_s"]


def test_skip_reason_renders_as_text_and_stays_a_tuple() -> None:
    from pytest_hokusai.report.html import SkipReason

    report = pytest.TestReport("c.py::test_sdk", ("c.py", 3, "test_sdk"), {}, "skipped",
                               ("/x/c.py", 33, "Skipped: the SDK is not installed"), "setup")
    HokusaiHtmlPlugin(dict).pytest_runtest_logreport(report)
    assert isinstance(report.longrepr, SkipReason)
    path, lineno, reason = report.longrepr  # pytest's -rs summary and junitxml unpack it
    assert (path, lineno, reason) == ("/x/c.py", 33, "Skipped: the SDK is not installed")
    assert report.longreprtext == "Skipped: the SDK is not installed"


def test_chart_stays_readable_with_an_outlier() -> None:
    """One 3 s measure and fifteen 2-20 ms ones: every bar is at least 5 % of the axis wide, and
    no label holds a host and port."""
    import math

    from pytest_hokusai.report.chart import summary_chart_figure

    rows = {"PUT http://127.0.0.1:34559/api/mlflow/api/2.0/mlflow-artifacts/artifacts/{id}/model.pkl":
            {"p50": 3000.0, "p95": 3000.0, "n": 1}}
    for i in range(15):
        value = 2.0 + i * 18.0 / 14
        rows[f"GET 127.0.0.1:34559/api/mlflow/api/2.0/mlflow/registered-models/get-{i}?name=*"] = {
            "p50": value, "p95": value, "n": 4}
    fig = summary_chart_figure(rows, budgets={"auth validation budget": 1000.0, "proxy request budget": 2000.0})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) == 2 * len(rows)  # a p95 and a p50 bar per measure
    # the share of the axis each bar covers, from its data coordinates through the axes transform
    for bar in bars:
        x0, x1 = bar.get_x(), bar.get_x() + bar.get_width()
        (a, _), (b, _) = ax.transAxes.inverted().transform(ax.transData.transform([(x0, 0), (x1, 0)]))
        assert b - a >= 0.05, f"a {x1:g} ms bar is only {100 * (b - a):.1f} % of the axis"
        assert math.isclose(a, 0.0, abs_tol=1e-9)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(rows)
    host_port = re.compile(r"(\d{1,3}\.){3}\d{1,3}|localhost|:\d{2,5}\b")
    assert not [label for label in labels if host_port.search(label)], labels
    assert all(label.split()[0] in ("GET", "PUT") and "/" in label for label in labels), labels
    budget_lines = [line for line in ax.get_lines() if line.get_linestyle() in ("--", ":")]
    assert sorted(line.get_xdata()[0] for line in budget_lines) == [1000.0, 2000.0]


def test_latency_by_endpoint_with_services_names_them_instead_of_host_and_port() -> None:
    exchanges = [
        Exchange("GET", "http://127.0.0.1:5123/health", status=200, elapsed_ms=3.0),
        Exchange("GET", "http://127.0.0.1:5124/health", status=200, elapsed_ms=4.0),
        Exchange("GET", "http://127.0.0.1:5123/api/mlflow/api/2.0/mlflow/runs/get?run_id=0a1b2c3d4e5f6a7b8c9d",
                 status=200, elapsed_ms=9.0),
    ]
    services = {"http://127.0.0.1:5123": "api", "http://127.0.0.1:5124": "auth",
                "http://127.0.0.1:5123/api/mlflow": "proxy"}
    assert latency_by_endpoint(exchanges, services) == {
        "GET /health (api)": [3.0], "GET /health (auth)": [4.0],
        "GET /api/2.0/mlflow/runs/get?run_id=* (proxy)": [9.0],
    }
