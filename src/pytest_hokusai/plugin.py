"""pytest-hokusai's entry point: options, configuration, report header, and the hooks that turn
check outcomes into a verdict, a diagnosis and reports.

Importing this module must not import mlflow, sklearn, pandas, fastapi or uvicorn: those load
inside the fixtures, the stack and the report code that need them.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

from ._keys import KEYS_KEY, RECORDER_KEY, SETTINGS_KEY, STATE_KEY
from .errors import SettingsError
from .markers import MARKERS
from .redaction import install_log_redaction, scrub_report
from .runtime import HokusaiRun
from .settings import SETTINGS, HokusaiSettings, resolve_keys, settings_from_config

GROUP_DESCRIPTION = "Hokusai platform live checks (pytest-hokusai)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hokusai", GROUP_DESCRIPTION)
    for spec in SETTINGS:
        help_text = f"{spec.help} (ini {spec.ini}, env {spec.env}; default: {spec.default or 'unset'})"
        if spec.flag:
            group.addoption(spec.option, action="store_true", default=None, dest=spec.dest, help=help_text)
        else:
            group.addoption(spec.option, action="store", default=None, dest=spec.dest,
                            metavar=spec.metavar, choices=spec.choices, help=help_text)
        parser.addini(spec.ini, help=spec.help, type="string", default="")


def get_settings(config: pytest.Config) -> HokusaiSettings:
    """The run's resolved :class:`HokusaiSettings` as configured (before the local stack applies)."""
    return config.stash[SETTINGS_KEY]


def get_run(config: pytest.Config) -> HokusaiRun:
    """The run object (:class:`pytest_hokusai.runtime.HokusaiRun`) of this pytest process."""
    run: HokusaiRun = config.stash[STATE_KEY]
    return run


def _progress_writer(config: pytest.Config) -> Any:
    # Looked up at each call: the terminal reporter registers after our tryfirst pytest_configure.
    # The stack starts inside a fixture, while pytest captures fd 1: suspend capturing to show it.
    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            reporter.write_line(f"hokusai: {line}")
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"hokusai: {line}")

    return write


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    settings = settings_from_config(config)
    try:
        keys = resolve_keys(settings)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if settings.baseline is not None:
        from .baseline import load_baseline

        try:
            load_baseline(settings.baseline)  # fail early, naming the setting, not at the end of the run
        except SettingsError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = settings
    config.stash[KEYS_KEY] = keys
    workerinput = getattr(config, "workerinput", None)
    if settings.is_local and workerinput is None:
        from .stack.extra import stack_extra_problem  # a core install has no local stack

        problem = stack_extra_problem("--hokusai-target=local",
                                      server_elsewhere=settings.stack_mlflow_python is not None)
        if problem:
            raise pytest.UsageError(problem)
    run = HokusaiRun(settings, keys, workerinput=workerinput, progress=_progress_writer(config))
    config.stash[STATE_KEY] = run
    run.state.started_at = time.time()  # the JSON report's started_at / duration_s
    config.stash[RECORDER_KEY] = run.state.recorder
    install_log_redaction()

    from .hooks_impl import HokusaiReporting

    config.pluginmanager.register(HokusaiReporting(config, run), "hokusai-reporting")
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
        _register_html(config, run)
    if config.pluginmanager.hasplugin("xdist"):
        from .distributed import HokusaiXdist

        config.pluginmanager.register(HokusaiXdist(run), "hokusai-xdist")
    if workerinput is None:
        from .junit import HokusaiJunit

        config.pluginmanager.register(HokusaiJunit(config), "hokusai-junit")

    # A deploy gate must never pass by skipping: `-m live` against remote without a usable key (missing
    # or malformed) is a usage error, before any request. Listing the checks (--collect-only) needs none.
    from .preflight import selects_live

    if workerinput is None and selects_live(config) and not config.option.collectonly:
        run.state.target = run.target_block()
        from .preflight import key_usage_error

        message = key_usage_error(run, settings)
        if message is not None:
            raise pytest.UsageError(message)


def _register_html(config: pytest.Config, run: HokusaiRun) -> None:
    """pytest-html integration, only when an HTML report is being written."""
    from .report.html import HokusaiHtmlExtras, HokusaiHtmlPlugin

    config.pluginmanager.register(HokusaiHtmlExtras(run.state.recorder.for_node), "hokusai-html-extras")
    if not hasattr(config, "workerinput"):

        def get_report() -> dict[str, Any]:
            from .report.json_report import build_json_report

            settings = run.settings_if_known() or run.base_settings
            return build_json_report(run.state, settings, run.state.target or run.target_block())

        config.pluginmanager.register(HokusaiHtmlPlugin(get_report, run.state.exchanges), "hokusai-html")


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(STATE_KEY, None)
    if run is not None:
        run.stop()  # safety net; the session normally stops the stack in pytest_sessionfinish


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return []
    from .terminal import header_wanted

    if not header_wanted(config, settings):
        return []  # installed but not used in this run: say nothing
    keys = config.stash.get(KEYS_KEY, None)
    from .runtime import environment_versions

    versions = environment_versions()
    version_line = ", ".join(f"{name} {value or 'not installed'}" for name, value in versions.items())
    if settings.is_local:
        lines = ["hokusai: target local (bundled reference stack; keys are minted at start)"]
    else:
        key = keys.primary.masked if keys and keys.primary else "not set"
        lines = [
            f"hokusai: target {settings.target}, api {settings.api_url}, auth {settings.auth_url}, key {key}",
            (f"hokusai: tracking uri {settings.tracking_uri}, service_id {settings.service_id}, "
             f"timeout {settings.timeout:g}s"),
        ]
    lines.append(f"hokusai: versions: {version_line}")
    if settings.report_issues is not None or settings.notify_url is not None:
        # the notify URL is a secret: only its masked form (scheme and host) is shown
        lines.append(f"hokusai: hand-off: issue reports {settings.report_issues or 'off'}, "
                     f"notify {settings.notify_url.masked if settings.notify_url else 'off'}")
    return lines


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, None]:
    run = item.config.stash.get(STATE_KEY, None)
    if run is None:
        yield
        return
    with run.state.recorder.context(nodeid=item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    scrub_report(outcome.get_result())
