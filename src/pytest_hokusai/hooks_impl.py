"""The stateful hook implementations behind plugin.py: the order of things in a run.

Registered by ``plugin.pytest_configure`` as a plugin object, so that ``plugin.py`` stays thin.
Each hook delegates to the module that owns its concern: :mod:`.preflight` (MLflow client and key
before any check), :mod:`.check_reports` (one check's report: annotation, labelling, the run's
record), :mod:`.run_diagnosis` (a failing check's code, the run's findings), :mod:`.distributed`
(what xdist workers send the controller), :mod:`.run_reports` (JSON/Markdown reports, hand-off) and
:mod:`.terminal` (the ``hokusai diagnosis`` section).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

from .check_reports import annotate, check_result, exchange_timings, is_live, report_data
from .evidence import Exchange
from .preflight import key_usage_error, mlflow_version_problem, selects_live
from .redaction import scrub_report
from .run_diagnosis import diagnose_run
from .run_reports import run_handoff, write_reports
from .runtime import HokusaiRun
from .secret import redact

__all__ = ["HokusaiReporting"]

#: Fixtures whose heavy imports (MLflow, scikit-learn, pandas) the warm-up thread does ahead of time.
WARM_FIXTURES = frozenset({"hokusai_mlflow_client", "hokusai_toy_model"})


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
        self.live_selected = any(is_live(item) for item in items)
        if not self.live_selected:
            return
        if config.option.collectonly:
            return  # listing the checks needs no key and sends nothing
        problem = mlflow_version_problem()
        if problem:
            raise pytest.UsageError(problem)
        settings = self.run.base_settings
        message = key_usage_error(self.run, settings, write_reports=not self.is_worker)
        if message is not None:
            raise pytest.UsageError(message)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Selected checks that use MLflow or the toy model: import those while the first checks talk HTTP.
        if not self.config.option.collectonly and any(
                is_live(item) and WARM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                for item in session.items):
            from . import warmup

            warmup.start()

    # -- start the local stack on the controller when running distributed ----------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.run.local is None or self.is_worker:
            return
        if self.distributed:
            self.run.local.ensure()
        elif selects_live(self.config) and not self.config.option.collectonly:
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
        if is_live(item):
            from .terminal import shorten_live_traceback

            shorten_live_traceback(item, call, report)
            annotate(self.run, item, report, call, is_worker=self.is_worker)
        scrub_report(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Once the triage has shown that nothing can answer (no host, no TLS), the remaining live
        # checks fail at once with that root cause instead of each timing out and printing long
        # client tracebacks: the run ends in seconds, and a gate still fails.
        blocker = self.run.blocker
        if blocker is not None and is_live(item):
            pytest.fail(f"{blocker.code}: {blocker.summary} (check not attempted: the first failing check "
                        f"already showed the target cannot be reached)", pytrace=False)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker or not (report.when == "call" or not report.passed):
            return
        state = self.run.state
        data = report_data(report)
        state.record_check(check_result(report, data))
        for name, values in (data.get("timings") or {}).items():
            for value in values:
                state.time(name, value)
        exchanges = [Exchange(**ex) for ex in data.get("exchanges", [])]
        if data.get("suite_error") and data["suite_error"] not in self.suite_errors:
            self.suite_errors.append(data["suite_error"])
        if self.distributed:
            from .distributed import merge_worker_facts, receive_from_worker

            merge_worker_facts(self.worker_facts, data.get("facts") or {})
            receive_from_worker(state, data, exchanges)
        for name, values in exchange_timings(exchanges, self.run.settings_if_known()).items():
            for value in values:
                state.time(name, value)

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
        diagnose_run(self.run, self.worker_facts, self.suite_errors)
        if self.live_selected or state.live_checks:
            settings = self.run.settings_if_known() or self.run.base_settings
            write_reports(self.run, settings)
            if not self.config.option.collectonly:  # nothing ran: nobody to tell, nothing to file
                self.handoff = run_handoff(self.run, settings)
        self.run.stop()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        from .terminal import write_diagnosis_section

        write_diagnosis_section(terminalreporter, self.run, self.handoff)
