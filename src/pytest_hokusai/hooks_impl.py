"""The stateful hook implementations behind plugin.py: outcomes, diagnosis, reports, xdist.

Registered by ``plugin.pytest_configure`` as plugin objects, so that ``plugin.py`` stays thin.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest
from _pytest._code.code import ExceptionRepr

from .evidence import Exchange
from .local import WORKERINPUT_KEY
from .markers import concern_names
from .redaction import scrub_report
from .runtime import HokusaiRun
from .secret import redact
from .settings import HokusaiSettings
from .state import CheckResult, Finding

__all__ = ["HokusaiReporting", "HokusaiXdist", "key_usage_error", "write_key_missing_reports"]

REPORT_ATTR = "hokusai"  # custom TestReport attribute; pytest-xdist serialises it to the controller
SUPPORTED_MLFLOW = ((2, 9), (4, 0))
#: Root causes after which no further live check can tell anything new.
BLOCKING_CODES = frozenset({"HOST_UNREACHABLE", "TLS_ERROR"})
#: Fixtures whose heavy imports (MLflow, scikit-learn, pandas) the warm-up thread does ahead of time.
WARM_FIXTURES = frozenset({"hokusai_mlflow_client", "hokusai_toy_model"})  # [min, max) of the MLflow client versions the checks know


def _is_live(item_or_report: Any) -> bool:
    return "live" in getattr(item_or_report, "keywords", {})


def _exchange_timings(exchanges: list[Exchange], settings: HokusaiSettings | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for ex in exchanges:
        if not ex.ok:
            continue
        if "/api/v1/keys/validate" in ex.url:
            out.setdefault("auth_validate_ms", []).append(ex.elapsed_ms)
        elif settings is not None and ex.url.startswith(settings.tracking_uri) and ex.label != "mlflow-client":
            out.setdefault("proxy_request_ms", []).append(ex.elapsed_ms)
    return out


def _is_diagnostic(exchange: Exchange) -> bool:
    """Exchanges the rules may read: not the triage's own probes (already in the evidence) and not
    the discovery matrix, whose era-dependent 404s are recorded as information only, and not the
    failures a check provoked on purpose (``check:provoked:``)."""
    label = exchange.label or ""
    return not label.startswith(("probe:", "check:discovery:", "check:provoked:"))


def _selects_live(config: pytest.Config) -> bool:
    markexpr = str(config.getoption("markexpr", "") or "")
    return "live" in markexpr and "not live" not in markexpr


def _mlflow_version_problem() -> str | None:
    from importlib import metadata

    try:
        version = metadata.version("mlflow")
    except metadata.PackageNotFoundError:
        return "mlflow is not installed; install pytest-hokusai with its dependencies (pip install pytest-hokusai)"
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return None
    low, high = SUPPORTED_MLFLOW
    if not low <= parts < high:
        return (f"the installed MLflow client {version} is not supported (need >= {low[0]}.{low[1]} and < "
                f"{high[0]}.{high[1]}); install a supported one, e.g. pip install 'mlflow>=3.9,<3.12'")
    return None


def write_key_missing_reports(run: HokusaiRun, settings: HokusaiSettings) -> None:
    """On a KEY_MISSING usage error, still leave a JSON/Markdown verdict for the pipeline."""
    from .diagnosis import RULES

    rule = RULES["KEY_MISSING"]
    run.state.findings = [Finding(code="KEY_MISSING", category=rule.category, primary=True,
                                  summary="No Hokusai API key is configured, so no check could run.",
                                  evidence=["HOKUSAI_API_KEY is unset and no --hokusai-api-key-file was given"],
                                  remediation=rule.fix)]
    _write_reports(run, settings)
    # no terminal summary follows a usage error: the hand-off's lines go straight to stdout
    _print_handoff(_StdoutWriter(), _run_handoff(run, settings))


def key_usage_error(run: HokusaiRun, settings: HokusaiSettings, *, write_reports: bool = True) -> str | None:
    """The usage-error message when the primary key cannot be used (missing or malformed) for a
    remote target, after leaving a JSON/Markdown verdict for the pipeline; ``None`` when it can.
    Nothing is sent: a malformed key is refused before any request, like a missing one."""
    if settings.is_local:
        return None
    key = run.base_keys.primary
    if key is None:
        if write_reports:
            write_key_missing_reports(run, settings)
        from .runtime import KEY_MISSING_MESSAGE

        return KEY_MISSING_MESSAGE
    problem = key.format_problem()
    if not problem:
        return None
    if write_reports:
        from .diagnosis import RULES

        rule = RULES["KEY_MALFORMED"]
        run.state.target = run.target_block()
        run.state.findings = [Finding(code="KEY_MALFORMED", category=rule.category, primary=True,
                                      summary=f"The API key {key.masked} from {key.source} is malformed ({problem}); "
                                              "it was not sent and no check ran.",
                                      evidence=[f"key {key.masked} from {key.source}: {problem}"],
                                      remediation=rule.fix)]
        _write_reports(run, settings)
        # like KEY_MISSING: no terminal summary follows a usage error, the hand-off goes to stdout
        _print_handoff(_StdoutWriter(), _run_handoff(run, settings))
    from .runtime import key_malformed_message

    return key_malformed_message(key, problem)


def _write_reports(run: HokusaiRun, settings: HokusaiSettings) -> None:
    if settings.report_json is None and settings.report_md is None:
        return
    from datetime import datetime, timezone

    from .report.json_report import build_json_report, write_json_report
    from .report.markdown import render_markdown, write_markdown

    report = build_json_report(run.state, settings, run.state.target or run.target_block())
    diff = _baseline_diff(run, settings, report)
    if diff is not None:
        report["baseline"] = {"path": str(settings.baseline), **diff.to_dict()}
    if settings.report_json is not None:
        write_json_report(settings.report_json, report)
    if settings.report_md is not None:
        text = render_markdown(report, generated_at=datetime.now(timezone.utc))
        if diff is not None:
            from .baseline import render_markdown as baseline_markdown

            text += "\n" + "\n".join(baseline_markdown(diff, factor=settings.regression_factor)) + "\n"
        write_markdown(settings.report_md, text)


def _baseline_diff(run: HokusaiRun, settings: HokusaiSettings, report: dict[str, Any] | None = None) -> Any:
    """Compare this run with ``--hokusai-baseline`` (None when no baseline is set)."""
    if settings.baseline is None:
        return None
    if run.baseline_diff is None:
        from .baseline import compare, load_baseline
        from .report.json_report import build_json_report

        current = report or build_json_report(run.state, settings, run.state.target or run.target_block())
        run.baseline_diff = compare(load_baseline(settings.baseline), current)
    return run.baseline_diff


class HokusaiReporting:
    """Per-test evidence and diagnosis, the run's verdict, reports and terminal summary."""

    def __init__(self, config: pytest.Config, run: HokusaiRun) -> None:
        self.config = config
        self.run = run
        self.is_worker = hasattr(config, "workerinput")
        self.distributed = not self.is_worker and bool(getattr(config.option, "numprocesses", None))
        self.live_selected = False
        self.worker_facts: dict[str, Any] = {}  #: facts found by checks on xdist workers
        self.handoff: Any = None  #: handoff.HandoffOutcome once the run's hand-off is done
        self.suite_errors: list[str] = []  #: SUITE_ERROR evidence lines (checks that crashed by themselves)

    # -- collection ----------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self.live_selected = any(_is_live(item) for item in items)
        if not self.live_selected:
            return
        if config.option.collectonly:
            return  # listing the checks needs no key and sends nothing
        problem = _mlflow_version_problem()
        if problem:
            raise pytest.UsageError(problem)
        settings = self.run.base_settings
        message = key_usage_error(self.run, settings, write_reports=not self.is_worker)
        if message is not None:
            raise pytest.UsageError(message)

    # -- start the local stack on the controller when running distributed ----------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Selected checks that use MLflow or the toy model: import those while the first checks talk HTTP.
        if not self.config.option.collectonly and any(
                _is_live(item) and WARM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                for item in session.items):
            from . import warmup

            warmup.start()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.run.local is None or self.is_worker:
            return
        if self.distributed:
            self.run.local.ensure()
        elif _selects_live(self.config) and not self.config.option.collectonly:
            # `-m live` on the local target: start the stack while pytest collects and imports.
            self.run.local.start_in_background()

    # -- warnings: the "warnings summary" prints messages raw ------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        text = str(warning_message.message)
        clean = redact(text)
        if clean != text:
            try:
                warning_message.message = warning_message.category(clean)
            except Exception:  # noqa: BLE001 - a warning class with an odd constructor
                warning_message.message = UserWarning(clean)

    # -- per test --------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if _is_live(item):
            from .terminal import shorten_live_traceback

            shorten_live_traceback(item, call, report)
            self._annotate(item, report, call)
        scrub_report(report)

    def _annotate(self, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[Any] | None = None
                  ) -> None:
        recorder = self.run.state.recorder
        exchanges: list[Exchange] = []
        data: dict[str, Any] = {}
        if report.when == "call" or report.failed:
            exchanges = recorder.for_node(item.nodeid)
            data["exchanges"] = [ex.to_dict() for ex in exchanges]
            data["timings"] = self.run.drain_measurements(item.nodeid)
        if report.failed:
            # A check that crashed by itself (the suite, a fixture, the host's settings) is not a
            # deployment finding: SUITE_ERROR with its exception, never the deployment's code.
            finding = None
            if call is not None and call.excinfo is not None:
                from .diagnosis.matchers.suite import suite_error_for_check

                finding = suite_error_for_check(item.nodeid, report.when, call.excinfo.value)
                if finding is not None:
                    data["suite_error"] = finding.evidence[0]
            if finding is None:
                finding = self._diagnose_failure(exchanges)
            if finding is not None:
                data["diagnosis"] = finding.code
                data["summary"] = finding.summary
                data["remediation"] = finding.remediation
                report.hokusai_diagnosis = finding.code  # type: ignore[attr-defined]  # read by report.html
                _prefix_failure(report, finding)
                if report.when == "call" and finding.code in self.run.base_settings.accept:
                    from .known_issues import accept_as_xfail

                    accept_as_xfail(report, finding)  # a known issue: xfail carrying the code
                    data["accepted"] = True
            if self.run.triage is not None and self.run.triage.facts:
                # facts found by checks (revocation delay, latency misses) travel to the controller
                data["facts"] = dict(self.run.triage.facts)
        leftovers = self.run.state.drain_unsent_leftovers()
        if leftovers and self.is_worker:  # the controller lists them (RunState.leftovers)
            data["leftovers"] = [left.to_dict() for left in leftovers]
        if data:
            setattr(report, REPORT_ATTR, data)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Once the triage has shown that nothing can answer (no host, no TLS), the remaining live
        # checks fail at once with that root cause instead of each timing out and printing long
        # client tracebacks: the run ends in seconds, and a gate still fails.
        blocker = self.run.blocker
        if blocker is not None and _is_live(item):
            pytest.fail(f"{blocker.code}: {blocker.summary} (check not attempted: the first failing check "
                        f"already showed the target cannot be reached)", pytrace=False)

    def _diagnose_failure(self, exchanges: list[Exchange]) -> Finding | None:
        try:
            evidence = self.run.ensure_triage()
            from .diagnosis import diagnose, finding_for_failure

            if self.run.blocker is None:
                primary = next((f for f in diagnose(evidence) if f.primary), None)
                if primary is not None and primary.code in BLOCKING_CODES:
                    self.run.blocker = primary

            return finding_for_failure(evidence, [e for e in exchanges if _is_diagnostic(e)])
        except Exception as exc:  # diagnosis must never hide the check's own failure
            self.run.triage_error = redact(f"{type(exc).__name__}: {exc}")
            return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        if report.when == "call" or not report.passed:
            data = getattr(report, REPORT_ATTR, None) or {}
            outcome: str = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
            if report.when == "setup" and report.skipped:
                outcome = "skipped"
            if report.skipped and hasattr(report, "wasxfail"):
                from .known_issues import XFAILED

                outcome = XFAILED
            message = ""
            if report.failed or report.skipped:
                message = _short_message(report)
            result = CheckResult(
                nodeid=report.nodeid, outcome=outcome, duration_s=report.duration,
                markers=concern_names(report.keywords), diagnosis=data.get("diagnosis"), message=message,
            )
            self.run.state.record_check(result)
            for name, values in (data.get("timings") or {}).items():
                for value in values:
                    self.run.state.time(name, value)
            exchanges = [Exchange(**ex) for ex in data.get("exchanges", [])]
            if data.get("suite_error") and data["suite_error"] not in self.suite_errors:
                self.suite_errors.append(data["suite_error"])
            if self.distributed and data.get("facts"):
                for name, value in data["facts"].items():
                    if name == "latency_misses":
                        known = self.worker_facts.setdefault(name, [])
                        known.extend(m for m in value if m not in known)
                    else:
                        self.worker_facts[name] = value
            if self.distributed:
                for ex in exchanges:
                    self.run.state.recorder.add(ex)
                from .state import Leftover

                for left in data.get("leftovers") or []:
                    self.run.state.add_leftover(Leftover(**left))
            for name, values in _exchange_timings(exchanges, self.run.settings_if_known()).items():
                for value in values:
                    self.run.state.time(name, value)

    # -- end of run ------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from . import warmup

        warmup.stop()  # the warm-up thread never outlives the session
        if self.is_worker:
            self.run.stop()
            return
        state = self.run.state
        state.target = self.run.target_block()
        state.finished_at = time.time()  # the JSON report's finished_at / duration_s
        live = state.live_checks
        accepted = self.run.base_settings.accept
        explained = any(c.outcome == "xfailed" and c.diagnosis in accepted for c in live)
        if any(c.outcome in ("failed", "error") for c in live) or explained:
            try:
                evidence = self.run.ensure_triage()
                for name, value in self.worker_facts.items():
                    if name == "latency_misses":
                        for miss in value:
                            evidence.add_latency_miss(miss)
                    else:
                        evidence.add_fact(name, value)
                evidence.exchanges.extend(e for e in state.recorder.all()
                                          if _is_diagnostic(e) and e not in evidence.exchanges)
                if self.suite_errors:
                    from .diagnosis.matchers.suite import FACT_SUITE_ERRORS

                    evidence.add_fact(FACT_SUITE_ERRORS, list(self.suite_errors))
                from .diagnosis import diagnose

                state.findings = diagnose(evidence)
            except Exception as exc:
                self.run.triage_error = redact(f"{type(exc).__name__}: {exc}")
            if not state.findings and self.suite_errors:
                from .diagnosis.matchers.suite import suite_run_finding

                state.findings = [suite_run_finding(self.suite_errors)]
            from .known_issues import mark_accepted

            mark_accepted(state.findings, accepted)
            failed = [c for c in live if c.outcome in ("failed", "error")]
            if not state.findings and failed:
                state.findings = [Finding(
                    code="UNEXPECTED_RESPONSE", category="other", primary=True,
                    summary=f"{len(failed)} live check(s) failed and no rule explains it.",
                    evidence=[f"{c.nodeid}: {c.message}" for c in failed[:10]]
                    + ([f"diagnosis error: {self.run.triage_error}"] if self.run.triage_error else []),
                    remediation="Read the failing checks' transcripts in the HTML report and the evidence above.",
                )]
        if self.live_selected or live:
            _write_reports(self.run, self.run.settings_if_known() or self.run.base_settings)
            if not self.config.option.collectonly:  # nothing ran: nobody to tell, nothing to file
                self.handoff = _run_handoff(self.run, self.run.settings_if_known() or self.run.base_settings)
        self.run.stop()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        state = self.run.state
        if not state.live_checks and not state.findings and not state.leftovers:
            return
        tr = terminalreporter
        tr.section("hokusai diagnosis", sep="=", bold=True, red=state.verdict == "fail",
                   green=state.verdict == "pass")
        tr.write_line(f"verdict: {state.verdict.upper()}  (target {state.target.get('mode')}, "
                      f"api {state.target.get('api_url')}, key {state.target.get('key')})")
        if not state.findings:
            tr.write_line("no findings: every selected live check passed")
        for finding in state.findings:
            head = "ROOT CAUSE" if finding.primary else "also"
            known = " (accepted known issue, --hokusai-accept)" if finding.accepted else ""
            tr.write_line(f"{head}: {finding.code} [{finding.category}]{known} {finding.summary}")
            tr.write_line(f"    owner: {_owner_of(finding.code)}")
            for line in finding.evidence[:6]:
                tr.write_line(f"    evidence: {line}")
            if finding.remediation:
                tr.write_line(f"    fix: {finding.remediation}")
        if self.run.triage_error:
            tr.write_line(f"(diagnosis incomplete: {self.run.triage_error})")
        if state.leftovers:
            from .known_issues import leftover_lines

            tr.write_line(f"leftovers: {len(state.leftovers)} thing(s) this run created and could not remove "
                          "(later runs reuse the canary names, so they do not multiply):")
            for line in leftover_lines(state.leftovers):
                tr.write_line(f"  {line}")
        settings = self.run.base_settings
        try:
            diff = _baseline_diff(self.run, self.run.settings_if_known() or settings)
        except Exception as exc:  # noqa: BLE001 - a bad baseline must not hide the verdict
            tr.write_line(f"hokusai baseline: not compared ({redact(str(exc))})")
            diff = None
        if diff is not None:
            from .baseline import render_text

            tr.section("hokusai baseline", sep="-")
            for line in render_text(diff, factor=settings.regression_factor):
                tr.write_line(line)
        for label, path in (("json", settings.report_json), ("markdown", settings.report_md)):
            if path is not None:
                tr.write_line(f"hokusai {label} report: {path}")
        _print_handoff(tr, self.handoff)


def _run_handoff(run: HokusaiRun, settings: HokusaiSettings) -> Any:
    """Issue reports, GitHub summary and annotations, notification (never raises)."""
    from .handoff import run_handoff

    return run_handoff(run, settings)


class _StdoutWriter:
    def write_line(self, line: str, **markup: Any) -> None:
        print(line, flush=True)


def _print_handoff(tr: Any, outcome: Any) -> None:
    if outcome is None:
        return
    for line in outcome.lines:
        tr.write_line(line)
    for line in outcome.warnings:
        tr.write_line(f"hokusai warning: {line}", yellow=True)
    for line in outcome.annotations:  # workflow commands: raw lines that start with "::"
        tr.write_line(line)


def _owner_of(code: str) -> str:
    from .diagnosis.ownership import owner_of

    return owner_of(code)


def _short_message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return redact(str(longrepr[2]))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return redact(str(crash.message).splitlines()[0] if crash.message else "")
    text = str(longrepr or "").strip().splitlines()
    return redact(text[-1] if text else "")


def _prefix_failure(report: pytest.TestReport, finding: Finding) -> None:
    """Make the failure message start with the diagnosis code and summary (terminal, JUnit, HTML)."""
    head = f"{finding.code}: {finding.summary}"
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    # The evidence and the fix are printed once, in the "hokusai diagnosis" section at the end of the
    # run, not after every failing check; the check's own message starts with CODE: summary.
    if crash is not None:
        if not str(crash.message).startswith(finding.code):
            crash.message = f"{head}\n{crash.message}"
        if isinstance(longrepr, ExceptionRepr):
            longrepr.addsection("hokusai", head)
    elif isinstance(longrepr, str):
        if not longrepr.startswith(finding.code):
            report.longrepr = f"{head}\n\n{longrepr}"
    elif longrepr is not None and not isinstance(longrepr, tuple):
        report.longrepr = f"{head}\n\n{longrepr}"


class HokusaiXdist:
    """pytest-xdist glue: hand the controller's local stack to every worker."""

    def __init__(self, run: HokusaiRun) -> None:
        self.run = run

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.run.local is not None:
            node.workerinput[WORKERINPUT_KEY] = self.run.local.ensure().to_wire()
