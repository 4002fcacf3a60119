"""The shipped checks inside a separate host project (issue 10): the same verdict whatever the host's
pytest settings.

The host project is pytester's directory with its own ``pytest.ini``: ``filterwarnings = error``,
``--strict-markers --strict-config``, ``-p no:cacheprovider``. It runs ``pytest --pyargs
pytest_hokusai.checks -m live --hokusai-target=local`` (each run starts its own stack) with
``--junitxml`` under ``xunit1`` and ``xunit2``, in random order (pytest-randomly, when installed) and
under ``-n 2`` (pytest-xdist):

* healthy stack: exit 0, verdict pass, no finding, no error;
* ``HOKUSAI_STACK_FAULTS=wrong-service-id``: exactly the checks that need the proxy to accept the key
  fail, each labelled SERVICE_ID_REJECTED in the JSON and JUnit reports and in the short summary; no
  check carries a code the fault does not explain (no SUITE_ERROR, no UNEXPECTED_RESPONSE); the
  diagnosis block is printed once, at the end.

These runs are heavy (about 20-40 s each) and marked ``slow``; the quick ones at the end (an unrelated
project prints no ``hokusai:`` line, ``--collect-only`` needs no key, a malformed key is a usage error)
run by default.
"""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_hokusai.diagnosis import RULES
from tests.support.fixedserver import FixedAnswerServer

from .conftest import SMALL_EDGE_ARGS, clean_environment, make_key, short_id
from .test_live_suite import MAY_SKIP, PROXY_KEY_CHECKS

HOST_INI = """\
[pytest]
addopts = --strict-markers --strict-config -p no:cacheprovider
filterwarnings =
    error
"""
HAS_RANDOMLY = importlib.util.find_spec("pytest_randomly") is not None
HAS_XDIST = importlib.util.find_spec("xdist") is not None
#: The issue's faulted run printed 459 to 2,221 lines; a readable one is well under that.
MAX_FAULTED_LINES = 400
SUBPROCESS_TIMEOUT_S = 300.0
FAULT, FAULT_CODE = "wrong-service-id", "SERVICE_ID_REJECTED"


@dataclass
class HostRun:
    result: pytest.RunResult
    report: dict[str, Any]
    junit: ET.Element
    family: str

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines + self.result.errlines)

    def outcomes(self, *names: str) -> set[str]:
        return {short_id(c["nodeid"]) for c in self.report["checks"] if c["outcome"] in names}

    def explain(self) -> str:
        lines = [f"exit {self.result.ret}, verdict {self.report['verdict']}"]
        lines += [f"diagnosis {d['code']} primary={d['primary']}: {d['summary']}" for d in self.report["diagnoses"]]
        lines += [f"{c['outcome']} {short_id(c['nodeid'])} {c['diagnosis']}" for c in self.report["checks"]
                  if c["outcome"] != "passed"]
        return "\n".join(lines) + "\n--- output tail ---\n" + self.output[-4000:]


def _host_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, family: str, xdist: bool,
              fault: str | None = None) -> HostRun:
    pytester.makefile(".ini", pytest=HOST_INI)
    clean_environment(monkeypatch)
    monkeypatch.setenv("COLUMNS", "240")  # a usual terminal: pytest cuts short-summary lines to its width
    if fault:
        monkeypatch.setenv("HOKUSAI_STACK_FAULTS", fault)
    junit = pytester.path / f"junit-{family}.xml"
    report = pytester.path / f"hokusai-{family}.json"
    args = ["--pyargs", "pytest_hokusai.checks", "-m", "live", "--hokusai-target=local", "-W", "error",
            f"--junitxml={junit}", "-o", f"junit_family={family}", f"--hokusai-report-json={report}",
            *SMALL_EDGE_ARGS]
    if HAS_RANDOMLY:
        args += ["-p", "randomly"]
    if xdist:
        args += ["-n", "2"]
    result = pytester.runpytest_subprocess(*args, timeout=SUBPROCESS_TIMEOUT_S)
    output = "\n".join(result.outlines + result.errlines)
    assert "INTERNALERROR" not in output, output
    assert report.exists(), output[-4000:]
    assert junit.exists(), output[-4000:]
    return HostRun(result, json.loads(report.read_text(encoding="utf-8")), ET.parse(junit).getroot(), family)


def _testcases(run: HostRun) -> dict[str, ET.Element]:
    return {f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}": case
            for case in run.junit.iter("testcase")}


def _assert_junit_shape(run: HostRun) -> None:
    """Per-check data is written where the JUnit family accepts it: inside each test case for
    xunit1, as test-suite properties for xunit2 (whose schema has no test-case properties)."""
    cases = list(run.junit.iter("testcase"))
    assert cases, "no test case in the JUnit file"
    in_cases = [case for case in cases if case.find("properties") is not None]
    suite_props = [p.get("name", "") for suite in run.junit.iter("testsuite")
                   for props in suite.findall("properties") for p in props.findall("property")]
    if run.family == "xunit2":
        assert not in_cases, "xunit2 allows no <properties> inside <testcase>"
        assert any(name.startswith("hokusai_discovery ") for name in suite_props), suite_props
    else:
        assert in_cases, "xunit1 keeps the per-check properties on the test case"
        assert all(case.get("file") for case in cases), "xunit1 test cases carry the file attribute"


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + 60)
@pytest.mark.parametrize(("family", "xdist"), [
    pytest.param("xunit2", False, id="xunit2-random-order"),
    pytest.param("xunit1", True, id="xunit1-xdist"),
])
def test_healthy_stack_passes_in_a_strict_host_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                      family: str, xdist: bool) -> None:
    if xdist and not HAS_XDIST:
        pytest.skip("pytest-xdist is not installed: pip install pytest-xdist")
    run = _host_run(pytester, monkeypatch, family=family, xdist=xdist)

    assert run.result.ret == pytest.ExitCode.OK, run.explain()
    assert run.report["verdict"] == "pass", run.explain()
    assert run.report["diagnoses"] == [], run.explain()
    assert run.outcomes("failed", "error") == set(), run.explain()
    assert run.outcomes("skipped") <= MAY_SKIP, run.explain()
    assert run.report["counts"]["passed"] >= 20 and run.report["counts"]["error"] == 0, run.report["counts"]
    junit_failures = [case.get("name") for case in run.junit.iter("testcase")
                      if case.find("failure") is not None or case.find("error") is not None]
    assert junit_failures == [], junit_failures
    _assert_junit_shape(run)
    if xdist:
        assert "2 workers" in run.output or "created: 2/2 workers" in run.output, run.output[-3000:]
    if HAS_RANDOMLY:
        assert "randomly-seed" in run.output, "the run must be in random order"


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + 60)
@pytest.mark.parametrize(("family", "xdist"), [
    pytest.param("xunit2", False, id="xunit2-random-order"),
    pytest.param("xunit1", True, id="xunit1-xdist"),
])
def test_faulted_stack_fails_only_what_the_fault_explains(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch, family: str,
                                                         xdist: bool) -> None:
    if xdist and not HAS_XDIST:
        pytest.skip("pytest-xdist is not installed: pip install pytest-xdist")
    run = _host_run(pytester, monkeypatch, family=family, xdist=xdist, fault=FAULT)

    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.explain()
    assert run.report["verdict"] == "fail", run.explain()
    assert run.report["diagnoses"][0]["code"] == FAULT_CODE and run.report["diagnoses"][0]["primary"], run.explain()
    # only the checks the fault explains fail, each with the fault's code
    assert run.outcomes("failed", "error") == PROXY_KEY_CHECKS, run.explain()
    labels = {short_id(c["nodeid"]): c["diagnosis"] for c in run.report["checks"] if c["outcome"] != "passed"
              and c["outcome"] != "skipped"}
    assert set(labels.values()) == {FAULT_CODE}, labels
    assert {d["code"] for d in run.report["diagnoses"]}.isdisjoint({"SUITE_ERROR", "UNEXPECTED_RESPONSE"}), \
        run.explain()
    # JUnit: the failing test cases' messages carry the fault's code and no other
    other_codes = [code for code in RULES if code != FAULT_CODE]
    cases = _testcases(run)
    failing = {}
    for name, case in cases.items():
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failing[name] = problem.get("message", "")
    assert set(failing) == PROXY_KEY_CHECKS, sorted(failing)
    for name, message in failing.items():
        assert message.startswith(f"{FAULT_CODE}: "), (name, message[:200])
        assert not [code for code in other_codes if code in message], (name, message[:300])
    _assert_junit_shape(run)
    # the terminal: diagnosis once at the end, short summary lines with CODE: summary, short output
    lines = run.result.outlines
    assert len(lines) <= MAX_FAULTED_LINES, f"{len(lines)} lines of output"
    assert sum("hokusai diagnosis" in line for line in lines) == 1, run.output
    assert sum(line.startswith("ROOT CAUSE: ") for line in lines) == 1, run.output
    diagnosis_at = next(i for i, line in enumerate(lines) if "hokusai diagnosis" in line)
    assert not [line for line in lines[:diagnosis_at] if line.lstrip().startswith(("evidence:", "fix:"))]
    # short-summary lines name a node id; captured log lines ("ERROR    hokusai.core...") do not
    summary = [line for line in lines if re.match(r"(FAILED|ERROR) \S+::", line)]
    assert len(summary) == len(PROXY_KEY_CHECKS), summary
    assert all(re.search(rf" - {FAULT_CODE}: \w", line) for line in summary), summary


# -- quick ones: silent where not used, listing needs no key, a malformed key is a usage error --------
def test_unrelated_project_prints_no_hokusai_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)
    # no stack starts here, and any HOKUSAI_* variable counts as "hokusai in use" (CI sets this one)
    monkeypatch.delenv("HOKUSAI_STACK_MLFLOW_PYTHON", raising=False)
    pytester.makefile(".ini", pytest=HOST_INI)
    pytester.makepyfile(test_unrelated="def test_one():\n    assert 1 + 1 == 2\n")

    quiet = pytester.runpytest_subprocess("-v")
    assert quiet.ret == pytest.ExitCode.OK, quiet.outlines
    assert [line for line in quiet.outlines + quiet.errlines if line.startswith("hokusai")] == []

    used = pytester.runpytest_subprocess("-v", "--hokusai-timeout=5")
    assert used.ret == pytest.ExitCode.OK
    assert any(line.startswith("hokusai: ") for line in used.outlines), used.outlines


def test_collect_only_lists_the_checks_without_a_key(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     counting_server: FixedAnswerServer) -> None:
    clean_environment(monkeypatch)
    pytester.makefile(".ini", pytest=HOST_INI)
    result = pytester.runpytest_subprocess("--pyargs", "pytest_hokusai.checks", "-m", "live", "--collect-only",
                                           "-q", f"--hokusai-api-url={counting_server.url}",
                                           f"--hokusai-auth-url={counting_server.url}")
    assert result.ret == pytest.ExitCode.OK, "\n".join(result.outlines + result.errlines)
    assert any("test_auth.py::test_auth_service_health" in line for line in result.outlines)
    assert counting_server.connections == 0


def test_malformed_key_is_a_usage_error_with_one_message(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         counting_server: FixedAnswerServer) -> None:
    clean_environment(monkeypatch)
    pytester.makefile(".ini", pytest=HOST_INI)
    garbage = "garbage-" + make_key()[-6:]
    monkeypatch.setenv("HOKUSAI_API_KEY", garbage)
    report = pytester.path / "hokusai.json"
    result = pytester.runpytest_subprocess("--pyargs", "pytest_hokusai.checks", "-m", "live",
                                           f"--hokusai-api-url={counting_server.url}",
                                           f"--hokusai-auth-url={counting_server.url}",
                                           f"--hokusai-report-json={report}")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("KEY_MALFORMED") == 1, output
    assert "HOKUSAI_API_KEY" in output and "--hokusai-target=local" in output
    assert garbage not in output, "the key is shown masked only"
    assert len(output.splitlines()) <= 5, output
    assert counting_server.connections == 0, counting_server.requests
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["verdict"] == "fail" and written["diagnoses"][0]["code"] == "KEY_MALFORMED"


def test_markers_are_declared_in_pyproject_too() -> None:
    """So that this repository's own runs work with the plugin disabled (-p no:hokusai)."""
    import tomllib

    from pytest_hokusai.markers import MARKERS

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]["markers"]
    names = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in declared}
    for name, description in MARKERS.items():
        assert names.get(name) == description, f"marker {name} missing or different in pyproject.toml"


CRASHING_CHECKS = '''
import warnings

import pytest

pytestmark = pytest.mark.live


def test_library_warning(hokusai_session, hokusai_settings):
    hokusai_session.probe("GET", hokusai_settings.api_url + "/health", label="check:crash")
    warnings.warn(UserWarning("a library deprecates something"))  # an error under filterwarnings = error


def test_suite_bug(hokusai_session):
    hokusai_session.no_such_method()


def test_deployment_answer(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("GET", hokusai_settings.api_url + "/health", label="check:answer")
    assert result.exchange.status == 503, "the deployment answered something else"
'''


def test_crashing_checks_get_suite_error_not_a_deployment_code(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              counting_server: FixedAnswerServer) -> None:
    clean_environment(monkeypatch)
    pytester.makefile(".ini", pytest=HOST_INI)
    pytester.makepyfile(test_crashing=CRASHING_CHECKS)
    monkeypatch.setenv("HOKUSAI_API_KEY", make_key())
    report, junit = pytester.path / "hokusai.json", pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess("-m", "live", "-p", "no:randomly", f"--hokusai-api-url={counting_server.url}",
                                           f"--hokusai-auth-url={counting_server.url}", "--hokusai-timeout=3",
                                           f"--hokusai-report-json={report}", f"--junitxml={junit}")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    written = json.loads(report.read_text(encoding="utf-8"))
    labels = {c["nodeid"].rsplit("::", 1)[1]: c["diagnosis"] for c in written["checks"]}
    assert labels["test_library_warning"] == "SUITE_ERROR" and labels["test_suite_bug"] == "SUITE_ERROR", labels
    assert labels["test_deployment_answer"] not in (None, "SUITE_ERROR"), labels
    suite = next(d for d in written["diagnoses"] if d["code"] == "SUITE_ERROR")
    assert suite["category"] == "other"
    assert any("UserWarning: a library deprecates something" in line for line in suite["evidence"]), suite
    assert any("AttributeError" in line and "no_such_method" in line for line in suite["evidence"]), suite
    messages = {case.get("name"): (case.find("failure") if case.find("failure") is not None
                                   else case.find("error")).get("message", "")
                for case in ET.parse(junit).getroot().iter("testcase")}
    assert messages["test_library_warning"].startswith("SUITE_ERROR: "), messages
    assert messages["test_suite_bug"].startswith("SUITE_ERROR: "), messages
    assert not messages["test_deployment_answer"].startswith("SUITE_ERROR"), messages
    assert re.search(r"FAILED \S*test_suite_bug - SUITE_ERROR: ", output), output
