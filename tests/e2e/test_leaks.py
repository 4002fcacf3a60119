"""The API key never leaks: not to the terminal, not to any report, not to any file a run writes.

Each test runs pytest in a subprocess (pytester) with every output at its most talkative
(``-vv --showlocals -rA``, DEBUG logs captured and live, JUnit with captured output, HTML, JSON,
Markdown) and scans stdout, stderr and every byte of every file under the run's directory (plus
base64 payloads and the HTML report's JSON blob, decoded) for the raw key and for its secret part.

* passing: the live suite against the healthy local stack, with a write key;
* faulted: the same with the stack's ``wrong-service-id`` fault (failures, diagnosis, triage probes);
* unreachable: API and auth URLs at closed loopback ports (connection errors, tracebacks);
* nasty: a test of our own that holds the raw key in locals, logs it, prints it and fails with it
  in the assertion message (plus one that xfails with the key in its reason); only the redaction
  layer stands between it and the outputs;
* warning: a warning whose message holds the key (the plugin redacts
  ``pytest_warning_recorded``).

To be sure a scan cannot pass because nothing was written, the stack and unreachable runs must show
the masked ``Authorization: Bearer hk_live_…wxyz`` in the HTML transcripts, and the nasty run its
masked key in the terminal and the JUnit XML. ``test_scanner_finds_planted_keys`` shows the scan
itself finds a key written raw, as a bare secret part, or base64-encoded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import _leakstack as ls

pytestmark = pytest.mark.timeout(ls.SUBPROCESS_TIMEOUT_S * 2)


def _assert_no_leaks(run: ls.ScenarioRun) -> None:
    leaks = ls.find_leaks(run)
    assert not leaks, (f"{run.name} run: the API key leaked in {len(leaks)} place(s) "
                       "(key shown as <full-key>/<secret-part>):\n" + "\n".join(leaks[:40]))


def _assert_masked_bearer_in_transcripts(run: ls.ScenarioRun) -> None:
    masked = "Bearer " + run.key.masked  # hk_live_ + U+2026 + last four
    assert run.key.masked == ls.KEY_PREFIX + "\u2026" + run.key.reveal()[-4:]
    transcripts = ls.html_transcripts(run.html_path)
    assert masked in transcripts, (
        f"{run.name} run: the HTML transcripts never show the masked Authorization header {masked!r}; "
        f"the scan proves nothing if nothing was written.\n{run.describe()}")


def test_passing_run_leaks_no_key(request: pytest.FixtureRequest) -> None:
    run = ls.cached_scenario(request, "passing")
    assert run.ret == 0, run.describe()
    assert run.report is not None and run.report["verdict"] == "pass", run.describe()
    _assert_masked_bearer_in_transcripts(run)
    _assert_no_leaks(run)


def test_faulted_run_leaks_no_key(request: pytest.FixtureRequest) -> None:
    run = ls.cached_scenario(request, "faulted")
    assert run.ret == 1, run.describe()
    assert run.report is not None and run.report["verdict"] == "fail", run.describe()
    primary = [d["code"] for d in run.report["diagnoses"] if d.get("primary")]
    assert primary == ["SERVICE_ID_REJECTED"], run.describe()
    issue = run.out_dir / "issues" / "01-SERVICE_ID_REJECTED.md"
    assert issue.exists() and "$HOKUSAI_API_KEY" in issue.read_text(encoding="utf-8"), "the issue report is scanned"
    assert "::error title=SERVICE_ID_REJECTED::" in run.stdout
    _assert_masked_bearer_in_transcripts(run)
    _assert_no_leaks(run)


def test_unreachable_run_leaks_no_key(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    api_port = ls.closed_port()
    auth_port = ls.closed_port()
    run = ls.run_scenario(pytester, monkeypatch, name="unreachable", key=ls.random_key(),
                          api_url=f"http://127.0.0.1:{api_port}", auth_url=f"http://127.0.0.1:{auth_port}")
    assert run.ret == 1, run.describe()
    assert run.report is not None and run.report["verdict"] == "fail", run.describe()
    assert run.key.masked in run.stdout, "the run should name the (masked) key it used"
    _assert_masked_bearer_in_transcripts(run)  # failed connections are recorded with their headers too
    _assert_no_leaks(run)


NASTY_CONFTEST = '''
import logging
import os

import pytest

log = logging.getLogger("nasty.conftest")


@pytest.fixture
def raw_key():
    key = os.environ["HOKUSAI_API_KEY"]
    log.warning("fixture hands out the key %s", key)
    return key
'''

NASTY_TEST = '''
import logging
import sys

import pytest

log = logging.getLogger("nasty.test")


def test_holds_logs_prints_and_fails_with_the_key(raw_key):
    key = raw_key
    secret_part = key[len("hk_live_"):]
    headers = {"Authorization": "Bearer " + key}
    url = "http://127.0.0.1:9/api?api_key=" + key
    log.debug("secret part alone: %s", secret_part)
    log.info("request to %s with %r", url, headers)
    log.error("the key is " + key)
    try:
        raise RuntimeError("upstream said no to " + key)
    except RuntimeError:
        log.exception("wrapped failure")
    print("stdout:", key, secret_part)
    print("stderr:", key, file=sys.stderr)
    assert False, "failing on purpose with " + key + " / " + secret_part


def test_xfail_reason_holds_the_key(raw_key):
    pytest.xfail("known problem with " + raw_key)  # -v line, -rA summary, JUnit <skipped message>
'''


def test_redaction_layer_scrubs_a_test_that_exposes_the_key(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A careless test (not the plugin's code) puts the key everywhere; the outputs still hold none."""
    pytester.makeconftest(NASTY_CONFTEST)
    pytester.makepyfile(test_nasty=NASTY_TEST)
    run = ls.run_scenario(pytester, monkeypatch, name="nasty", key=ls.random_key(), api_url=None,
                          auth_url=None, args=("test_nasty.py",))
    assert run.ret == 1, run.describe()
    # the careless test really ran and its outputs are there, masked
    assert "FAILED test_nasty.py::test_holds_logs_prints_and_fails_with_the_key" in run.stdout, run.describe()
    masked = run.key.masked
    assert f"failing on purpose with {masked}" in run.stdout, run.describe()  # assertion message
    assert "key        = " in run.stdout and masked in run.stdout, run.describe()  # --showlocals
    assert f"the key is {masked}" in run.stdout, run.describe()  # live log
    assert "\u2026" + run.key.reveal()[-4:] in run.stdout  # the secret part alone, masked
    assert f"XFAIL test_nasty.py::test_xfail_reason_holds_the_key - known problem with {masked}" in run.stdout
    junit = (run.out_dir / "j.xml").read_text(encoding="utf-8")
    assert f"stdout: {masked}" in junit, "junit_logging=all should have put the captured stdout in the XML"
    _assert_no_leaks(run)


def test_warning_message_with_the_key_is_redacted(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning whose message holds the key (a library warning about a URL, say) is printed masked."""
    pytester.makepyfile(test_warns='''
import os
import warnings


def test_warns_with_the_key():
    warnings.warn("deprecated call with " + os.environ["HOKUSAI_API_KEY"])
''')
    run = ls.run_scenario(pytester, monkeypatch, name="warning", key=ls.random_key(), api_url=None,
                          auth_url=None, args=("test_warns.py", "-W", "always::UserWarning"))
    assert run.ret == 0, run.describe()
    _assert_no_leaks(run)
    assert f"UserWarning: deprecated call with {run.key.masked}" in run.stdout, run.describe()


def test_scanner_finds_planted_keys(tmp_path: Path) -> None:
    """The scan itself can fail: a key planted raw, as a secret part, or base64-encoded is found."""
    import base64

    key = ls.random_key()
    raw = key.reveal()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "log.txt").write_text(f"one\ntwo\nAuthorization: Bearer {raw}\n", encoding="utf-8")
    (tmp_path / "cache.bin").write_bytes(b"\x00\x01" + raw[len(ls.KEY_PREFIX):].encode() + b"\xff")
    hidden = base64.b64encode(f"text extra with {raw}".encode()).decode()
    (tmp_path / "out" / "r.html").write_text(f'<a href="data:text/plain;base64,{hidden}">x</a>',
                                             encoding="utf-8")
    (tmp_path / "clean.txt").write_text(f"masked only: {key.masked}\n", encoding="utf-8")
    run = ls.ScenarioRun(name="planted", path=tmp_path, out_dir=tmp_path / "out", ret=0,
                         stdout=f"ok\n{raw}\n", stderr="", key=key, seconds=0.0)
    leaks = ls.find_leaks(run)
    where = {leak.split(":", 1)[0] for leak in leaks}
    assert where == {"stdout (as pytester read it)", "out/log.txt", "cache.bin",
                     "out/r.html [base64 payload #1]"}, leaks
    assert len(leaks) == 4, "the secret part inside a full key is reported once, as the full key"
    assert any(leak.startswith("out/log.txt:3: full key: Authorization: Bearer <full-key>") for leak in leaks)
    assert not any(raw[len(ls.KEY_PREFIX):] in leak for leak in leaks), "a leak report must not leak"
