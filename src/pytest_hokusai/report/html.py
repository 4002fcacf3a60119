"""pytest-html integration: a verdict summary at the top, per-test HTTP transcripts, a latency chart
and a redacted environment table.

Two small plugin objects, registered by ``plugin.py`` only when pytest-html is active
(``config.pluginmanager.hasplugin("html")``) and a report is requested (``--html``):

* :class:`HokusaiHtmlPlugin` (controller only, ``not hasattr(config, "workerinput")``): report
  title, the summary block, a *Diagnosis* column and environment-metadata redaction.
* :class:`HokusaiHtmlExtras` (every process that runs tests, xdist workers included, since
  the exchanges are recorded where the test runs): attaches each test's redacted exchanges and
  diagnosis to ``report.extras`` (not the deprecated ``report.extra``) and stores the diagnosis code
  on the report as ``report.hokusai_diagnosis``, which travels to the controller with the report;
  it also masks the worker's environment metadata, which xdist merges into the controller's.

Recommended ini line (pytest-html masks matching environment-table rows); the plugin also masks
them itself (:func:`redact_metadata`)::

    environment_table_redact_list = ^HOKUSAI_.*(KEY|TOKEN)

Every text is scrubbed of keys (:func:`~pytest_hokusai.report.scrub`) and HTML-escaped; the chart
is an embedded ``data:`` PNG, so a ``--self-contained-html`` report works offline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Mapping, MutableMapping
from html import escape
from typing import Any

import pytest

from ..evidence import Exchange
from ..state import Finding
from ._redact import scrub
from .chart import latency_by_endpoint, latency_chart_png, png_data_uri, summary_chart_png
from .verdict_text import count_outcomes, no_finding_sentence

__all__ = [
    "MAX_EXCHANGES_PER_TEST",
    "RECOMMENDED_REDACT_LIST",
    "REPORT_ATTR",
    "SECRET_NAME",
    "HokusaiHtmlExtras",
    "HokusaiHtmlPlugin",
    "SkipReason",
    "attach_extras",
    "chart_data_uri",
    "exchanges_html",
    "leftovers_html",
    "redact_config_metadata",
    "redact_metadata",
    "summary_html",
]

#: The ``environment_table_redact_list`` line the docs recommend.
RECOMMENDED_REDACT_LIST = r"^HOKUSAI_.*(KEY|TOKEN)"
#: Metadata keys whose values are replaced by ``***``.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
#: Attribute of a TestReport holding the test's diagnosis code (serialised with the report by xdist).
REPORT_ATTR = "hokusai_diagnosis"
#: Per-test transcripts stop after this many exchanges (the rest are counted).
MAX_EXCHANGES_PER_TEST = 60
DEFAULT_TITLE = "Hokusai live checks"

Diagnosis = Finding | Mapping[str, Any] | str | None

_CSS = """
#hokusai-summary{border:1px solid #ccc;border-radius:6px;padding:6px 12px;margin:6px 0 10px;font-size:13px}
#hokusai-summary .hk-head{display:flex;gap:12px;align-items:center;flex-wrap:wrap}
#hokusai-verdict{font-weight:bold;font-size:20px;padding:2px 16px;border-radius:4px;color:#fff}
#hokusai-verdict.hk-pass{background:#2e7d32}#hokusai-verdict.hk-fail{background:#c62828}
#hokusai-target{color:#444}
#hokusai-primary{margin:6px 0;padding:4px 8px;border-left:4px solid #c62828;background:#fdecea}
#hokusai-primary.hk-none{border-left-color:#2e7d32;background:#edf7ed}
#hokusai-summary .hk-remedy{margin-top:3px}
#hokusai-summary .hk-accepted{background:#fff3cd;border-radius:3px;padding:0 4px}
#hokusai-summary ul{margin:2px 0 2px 18px;padding:0}
#hokusai-summary details{margin:2px 0}
#hokusai-summary .hk-row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap;margin-top:6px}
#hokusai-summary table,.hokusai-exchanges{border-collapse:collapse;font-size:12px}
#hokusai-summary td,#hokusai-summary th,.hokusai-exchanges td,.hokusai-exchanges th{border:1px solid #ddd;
padding:1px 6px;text-align:left;vertical-align:top}
#hokusai-latency-chart{max-width:100%;height:auto}
.hokusai-exchanges td.hk-excerpt{font-family:monospace;max-width:520px;word-break:break-all}
"""


def _text(value: Any) -> str:
    """Scrubbed, HTML-escaped text of any value."""
    return escape(scrub("" if value is None else str(value)))


def _as_finding(diagnosis: Diagnosis) -> Finding | None:
    if diagnosis is None or diagnosis == "":
        return None
    if isinstance(diagnosis, Finding):
        return diagnosis
    if isinstance(diagnosis, str):
        return Finding(code=diagnosis, category="", summary="")
    return Finding(
        code=str(diagnosis.get("code", "UNEXPECTED_RESPONSE")), category=str(diagnosis.get("category", "")),
        summary=str(diagnosis.get("summary", "")), evidence=list(diagnosis.get("evidence") or []),
        remediation=str(diagnosis.get("remediation", "")), primary=bool(diagnosis.get("primary", False)),
    )


# -- summary block ------------------------------------------------------------------------------
def chart_data_uri(report: Mapping[str, Any], exchanges: Iterable[Exchange] = ()) -> str | None:
    """The latency chart as a ``data:`` URI: per endpoint from the exchanges if there are any,
    else from the report's timing series; ``None`` if matplotlib cannot be imported."""
    try:
        series = latency_by_endpoint(exchanges, _services(report))
        if series:
            return png_data_uri(latency_chart_png(series, budgets=_budget_lines(report)))
        rows = {
            name: value for name, value in dict(report.get("timings") or {}).items()
            if isinstance(value, Mapping) and value.get("n") and name.endswith("_ms")
        }
        return png_data_uri(summary_chart_png(rows, title="Latency per measure", budgets=_budget_lines(report)))
    except ImportError:
        return None


#: Chart names of the target's base URLs (labels name the service instead of its host and port).
_SERVICE_NAMES = (("tracking_uri", "proxy"), ("direct_mlflow_url", "direct MLflow"), ("auth_url", "auth"),
                  ("api_url", "api"))


def _services(report: Mapping[str, Any]) -> dict[str, str]:
    target = dict(report.get("target") or {})
    return {str(target[key]): name for key, name in _SERVICE_NAMES if target.get(key)}


def _budget_lines(report: Mapping[str, Any]) -> dict[str, float]:
    """The millisecond budgets to draw on the latency chart (``budgets`` of the JSON report)."""
    budgets = dict(report.get("budgets") or {})
    names = {"auth_validate_ms": "auth validation budget", "proxy_request_ms": "proxy request budget"}
    return {label: float(budgets[key]) for key, label in names.items()
            if isinstance(budgets.get(key), (int, float)) and budgets[key] > 0}


def _judged(value: Any, budget: Any) -> str:
    """The measures table's result cell: within / over budget, or why there is no verdict."""
    if value is None:
        return "not measured"
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        return "no budget"
    return "within budget" if float(value) <= float(budget) else "over budget"


def _timings_table(timings: Mapping[str, Any], budgets: Mapping[str, Any] | None = None) -> str:
    """The measures table: p50, p95, n, and for the budgeted measures the budget and the result
    (the p95, or the registration time, against it)."""
    budgets = budgets or {}
    rows = []
    for name, value in timings.items():
        unit = " s" if name.endswith("_s") else (" ms" if name.endswith("_ms") else "")
        budget = budgets.get(name)
        budget_cell = f"{budget:g}{unit}" if isinstance(budget, (int, float)) else "\u2014"
        if isinstance(value, Mapping):
            n = value.get("n", 0)
            measured = n and value.get("p95") is not None
            p50, p95 = (f"{value.get('p50')}{unit}", f"{value.get('p95')}{unit}") if measured else ("\u2014",) * 2
            result = _judged(value.get("p95") if measured else None, budget) if name in budgets else "\u2014"
            rows.append(f"<tr><td>{_text(name)}</td><td>{_text(p50)}</td><td>{_text(p95)}</td>"
                        f"<td>{_text(n)}</td><td>{_text(budget_cell)}</td>"
                        f'<td class="hk-result">{_text(result)}</td></tr>')
        else:
            shown = f"{value}{unit}" if value is not None else "not measured"
            result = _judged(value, budget) if name in budgets else "\u2014"
            rows.append(f'<tr><td>{_text(name)}</td><td colspan="3">{_text(shown)}</td>'
                        f'<td>{_text(budget_cell)}</td><td class="hk-result">{_text(result)}</td></tr>')
    return ('<table id="hokusai-timings"><thead><tr><th>measure</th><th>p50</th><th>p95</th><th>n</th>'
            "<th>budget</th><th>result</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _evidence_list(evidence: Iterable[Any]) -> str:
    items = [f"<li><code>{_text(line)}</code></li>" for line in evidence]
    if not items:
        return ""
    return f"<details open><summary>Evidence ({len(items)})</summary><ul>{''.join(items)}</ul></details>"


def summary_html(report: Mapping[str, Any], *, chart_uri: str | None = None) -> str:
    """The summary block (pure): verdict badge ``#hokusai-verdict``, target ``#hokusai-target``,
    root cause ``#hokusai-primary`` with remedy and evidence, ``#hokusai-findings``,
    ``#hokusai-timings`` and ``<img id="hokusai-latency-chart">`` (when ``chart_uri`` is given).
    All text is scrubbed of keys and escaped."""
    verdict = "PASS" if str(report.get("verdict")) == "pass" else "FAIL"
    target = dict(report.get("target") or {})
    diagnoses = [d for d in report.get("diagnoses") or [] if isinstance(d, Mapping)]
    primary = next((d for d in diagnoses if d.get("primary")), None)
    others = [d for d in diagnoses if d is not primary]
    checks = list(report.get("checks") or [])

    counts = count_outcomes(check.get("outcome") for check in checks)
    tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no check ran"
    target_bits = [f"target <b>{_text(target.get('mode', '?'))}</b>"]
    for name, label in (("api_url", "api"), ("auth_url", "auth"), ("tracking_uri", "tracking uri")):
        if target.get(name):
            target_bits.append(f"{label} <code>{_text(target[name])}</code>")
    target_bits.append(f"key <code>{_text(target.get('key') or 'not set')}</code>")

    parts = [f"<style>{_CSS}</style>",
             f'<div id="hokusai-summary" data-verdict="{verdict.lower()}">',
             '<div class="hk-head">',
             f'<span id="hokusai-verdict" class="hk-{verdict.lower()}">{verdict}</span>',
             f'<span id="hokusai-checks">{_text(tally)}</span>',
             f'<span id="hokusai-target">{" · ".join(target_bits)}</span>',
             "</div>"]
    if primary is not None:
        parts += [
            f'<div id="hokusai-primary" data-code="{_text(primary.get("code"))}">',
            (f"<b>Root cause: <code>{_text(primary.get('code'))}</code></b> "
             f"({_text(primary.get('category'))})"
             + (' <span class="hk-accepted">accepted known issue</span>' if primary.get("accepted") else "")
             + f" \u2014 {_text(primary.get('summary'))}"),
            f'<div class="hk-owner"><b>Owner:</b> <code>{_text(primary.get("owner") or "")}</code></div>',
            f'<div class="hk-remedy"><b>Remedy:</b> {_text(primary.get("remediation") or "see the evidence")}</div>',
            _evidence_list(primary.get("evidence") or []),
            "</div>",
        ]
    else:
        message = no_finding_sentence(verdict, counts)
        parts.append(f'<div id="hokusai-primary" class="hk-none" data-code="">{_text(message)}</div>')
    if others:
        items = []
        for finding in others:
            remedy = finding.get("remediation")
            items.append(
                f"<li><code>{_text(finding.get('code'))}</code> ({_text(finding.get('category'))}) "
                f"{_text(finding.get('summary'))}"
                + (f" <i>Owner:</i> <code>{_text(finding.get('owner'))}</code>" if finding.get("owner") else "")
                + (f" <i>Remedy:</i> {_text(remedy)}" if remedy else "")
                + (_evidence_list(finding.get("evidence") or []).replace("<details open>", "<details>"))
                + "</li>"
            )
        parts.append(f'<div id="hokusai-findings"><b>Other findings</b><ul>{"".join(items)}</ul></div>')
    parts.append(leftovers_html(report.get("leftovers") or []))
    parts.append('<div class="hk-row">')
    parts.append(_timings_table(dict(report.get("timings") or {}), dict(report.get("budgets") or {})))
    if chart_uri:
        parts.append(f'<img id="hokusai-latency-chart" alt="Latency per endpoint (p50, p95)" '
                     f'src="{escape(chart_uri, quote=True)}">')
    parts += ["</div>", "</div>"]
    return scrub("".join(parts))


def leftovers_html(leftovers: Iterable[Any]) -> str:
    """``#hokusai-leftovers``: what the run created and could not remove, with how to remove it."""
    rows = [left for left in leftovers if isinstance(left, Mapping)]
    if not rows:
        return ""
    items = "".join(
        f'<li data-kind="{_text(left.get("kind"))}"><code>{_text(left.get("name"))}</code> '
        f"({_text(left.get('kind'))}): {_text(left.get('why'))}"
        + (f"<br><i>Remove:</i> {_text(left.get('remove'))}" if left.get("remove") else "") + "</li>"
        for left in rows)
    return (f'<div id="hokusai-leftovers"><b>Leftovers</b> ({len(rows)}: created by this run, not removable by '
            f"it; later runs reuse these names)<ul>{items}</ul></div>")


# -- per-test transcripts -----------------------------------------------------------------------
def exchanges_html(exchanges: Iterable[Exchange], diagnosis: Diagnosis = None, *,
                   limit: int = MAX_EXCHANGES_PER_TEST) -> str:
    """A test's diagnosis (code, summary, remedy) and a table of its exchanges: method, URL,
    status (or error class), latency, how the key was sent, body excerpt. Scrubbed and escaped."""
    parts = ['<div class="hokusai-test">']
    finding = _as_finding(diagnosis)
    if finding is not None:
        parts.append(
            f'<div class="hokusai-test-diagnosis" data-code="{_text(finding.code)}"><b>Diagnosis:</b> '
            f"<code>{_text(finding.code)}</code>"
            + (f" \u2014 {_text(finding.summary)}" if finding.summary else "")
            + (f"<br><b>Remedy:</b> {_text(finding.remediation)}" if finding.remediation else "")
            + "</div>"
        )
    items = list(exchanges)
    if items:
        rows = []
        for index, ex in enumerate(items[:limit], start=1):
            if ex.status is None:
                status = f"{ex.error or 'error'}" + (f": {ex.error_detail}" if ex.error_detail else "")
            else:
                status = str(ex.status)
            rows.append(
                f"<tr><td>{index}</td><td>{_text(ex.method)}</td><td>{_text(ex.url)}</td>"
                f"<td>{_text(status)}</td><td>{ex.elapsed_ms:.0f}</td><td>{_text(ex.auth)}</td>"
                f'<td class="hk-excerpt">{_text(ex.body_excerpt)}</td></tr>'
            )
        more = len(items) - limit
        if more > 0:
            rows.append(f'<tr><td colspan="7">{more} more exchange(s) not shown</td></tr>')
        parts.append(
            '<table class="hokusai-exchanges" style="border-collapse:collapse;font-size:12px">'
            "<thead><tr><th>#</th><th>method</th><th>URL</th><th>status</th><th>ms</th><th>auth</th>"
            "<th>excerpt</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    else:
        parts.append('<div class="hokusai-no-exchanges">No HTTP exchange recorded for this test.</div>')
    parts.append("</div>")
    return scrub("".join(parts))


def attach_extras(report: pytest.TestReport, exchanges: Iterable[Exchange], diagnosis: Diagnosis = None) -> None:
    """Append the transcript of ``exchanges`` and ``diagnosis`` to ``report.extras`` (one HTML
    extra) and set ``report.hokusai_diagnosis`` to the code, unless it is already set."""
    from pytest_html import extras as html_extras

    items = list(exchanges)
    finding = _as_finding(diagnosis)
    if not items and finding is None:
        return
    current = list(getattr(report, "extras", None) or [])
    current.append(html_extras.html(exchanges_html(items, finding)))
    report.extras = current  # type: ignore[attr-defined]
    if finding is not None and not getattr(report, REPORT_ATTR, None):
        setattr(report, REPORT_ATTR, finding.code)


# -- environment metadata ------------------------------------------------------------------------
def redact_metadata(metadata: MutableMapping[str, Any]) -> None:
    """In place: values under keys matching :data:`SECRET_NAME` become ``***``; every other string
    (nested dicts and lists included) is scrubbed of keys."""
    for name in list(metadata):
        value = metadata[name]
        if SECRET_NAME.search(str(name)):
            metadata[name] = "***"
        elif isinstance(value, str):
            metadata[name] = scrub(value)
        elif isinstance(value, MutableMapping):
            redact_metadata(value)
        elif isinstance(value, list):
            metadata[name] = [scrub(v) if isinstance(v, str) else v for v in value]


def redact_config_metadata(config: pytest.Config) -> None:
    """Apply :func:`redact_metadata` to pytest-metadata's dict in ``config.stash``, if there is one."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:  # pragma: no cover - pytest-html depends on pytest-metadata
        return
    metadata = config.stash.get(metadata_key, None)
    if metadata is not None:
        redact_metadata(metadata)


# -- skip reasons as text ----------------------------------------------------------------------------
class SkipReason(tuple):  # type: ignore[type-arg]
    """A skip's ``(path, lineno, reason)`` that renders as ``Skipped: reason`` rather than as a Python
    tuple (pytest-html shows ``longreprtext``). Still a 3-tuple, so pytest's terminal ``-rs`` summary
    and junitxml unpack it as before. Set on the controller only (after any xdist transport)."""

    def toterminal(self, out: Any) -> None:
        reason = str(self[2])
        out.line(reason if reason.startswith("Skipped") else f"Skipped: {reason}")


# -- the plugin objects ----------------------------------------------------------------------------
class HokusaiHtmlPlugin:
    """pytest-html hooks of the controller (register with
    ``config.pluginmanager.register(HokusaiHtmlPlugin(...), "hokusai-html")`` only when
    ``config.pluginmanager.hasplugin("html")`` and ``not hasattr(config, "workerinput")``, from a
    ``pytest_configure`` that runs before pytest-metadata's, i.e. ``tryfirst``).

    :param get_report: returns the run's ``pytest-hokusai/1`` report dict; called once, in
        ``pytest_html_results_summary`` (at session finish, before the HTML is written).
    :param get_exchanges: returns every recorded exchange of the run, for the latency chart
        (optional; without it the chart is drawn from the report's timing series).
    :param title: the report title; the verdict and root-cause code are appended at the end.
    """

    def __init__(
        self,
        get_report: Callable[[], Mapping[str, Any]],
        get_exchanges: Callable[[], Iterable[Exchange]] | None = None,
        *,
        title: str = DEFAULT_TITLE,
    ) -> None:
        self._get_report = get_report
        self._get_exchanges = get_exchanges
        self._title = title
        self._html_report: Any = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report: Any) -> None:
        self._html_report = report
        report.title = self._title

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        # xdist workers' metadata is merged into the controller's at pytest_testnodedown, after
        # sessionstart: mask again now, just before pytest-html writes the environment table.
        redact_config_metadata(session.config)
        report = self._get_report()
        exchanges = list(self._get_exchanges()) if self._get_exchanges is not None else []
        prefix.insert(0, summary_html(report, chart_uri=chart_data_uri(report, exchanges)))
        if self._html_report is not None:
            title = f"{self._title}: {'PASS' if report.get('verdict') == 'pass' else 'FAIL'}"
            primary = next((d for d in report.get("diagnoses") or [] if d.get("primary")), None)
            if primary is not None:
                title += f" ({primary.get('code')})"
            self._html_report.title = scrub(title)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(2, '<th class="sortable" data-column-type="diagnosis">Diagnosis</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        code = getattr(report, REPORT_ATTR, None) or ""
        cells.insert(2, f'<td class="col-diagnosis">{_text(code)}</td>')

    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_metadata(self, metadata: MutableMapping[str, Any]) -> None:
        # trylast: after the other pytest_metadata implementations have added their values
        redact_metadata(metadata)

    @pytest.hookimpl(tryfirst=True)  # before pytest-html renders the row's log from longreprtext
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            report.longrepr = SkipReason(report.longrepr)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Metadata added after pytest_metadata ran is masked here, before pytest-html's own
        # (trylast) sessionstart renders the environment table.
        redact_config_metadata(session.config)


class HokusaiHtmlExtras:
    """Per-test extras for pytest-html; register in every process that runs tests (controller
    and xdist workers) when pytest-html is active and ``--html`` is given.

    :param get_exchanges_for: node id -> the exchanges that test made (``Recorder.for_node``).
    :param get_diagnosis_for: node id -> the test's diagnosis (a :class:`Finding`, a finding dict,
        a code, or ``None``); optional. Without it, a code already put on the report as
        ``report.hokusai_diagnosis`` (by an inner ``pytest_runtest_makereport`` wrapper) is shown.

    Attaches on the ``call`` report, or on the ``setup`` report when setup did not pass.
    """

    def __init__(
        self,
        get_exchanges_for: Callable[[str], Iterable[Exchange]],
        get_diagnosis_for: Callable[[str], Diagnosis] | None = None,
    ) -> None:
        self._get_exchanges_for = get_exchanges_for
        self._get_diagnosis_for = get_diagnosis_for

    # tryfirst: outermost wrapper, so this runs after the other plugins' wrappers (pytest-html's
    # own merges fixture extras first) and sees a diagnosis an inner wrapper put on the report.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call" or (report.when == "setup" and not report.passed):
            diagnosis: Diagnosis = None
            if self._get_diagnosis_for is not None:
                diagnosis = self._get_diagnosis_for(item.nodeid)
            if diagnosis is None:
                diagnosis = getattr(report, REPORT_ATTR, None)
            attach_extras(report, self._get_exchanges_for(item.nodeid), diagnosis)
        return report

    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_metadata(self, metadata: MutableMapping[str, Any]) -> None:
        # On an xdist worker this dict is sent to the controller (pytest-metadata merges it there).
        redact_metadata(metadata)
