"""Ready-to-file bug reports, one Markdown file per finding (``--hokusai-report-issues DIR``).

Each report is addressed to the team that owns the finding's code
(:func:`~pytest_hokusai.diagnosis.ownership.owner_of`) and can be pasted into an issue tracker as it
is: a title with the code and the deployment; the owner; the impact on third parties in one
sentence; since when (with ``--hokusai-baseline``: passing in the baseline run and failing now,
both timestamps); a minimal reproduction as ``curl`` commands and as a few lines of stock MLflow
client (:mod:`.repro`), with the key read from ``$HOKUSAI_API_KEY``; what the contract expects
against what was seen; the redacted evidence; the remedy; the plugin and client versions.
An accepted finding (``--hokusai-accept``) is written too, marked as a known issue.

:func:`render_issues` is pure (report dict + recorded exchanges in, texts out);
:func:`write_issues` writes them. Every text is scrubbed of keys before it is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..evidence import Exchange
from ._redact import scrub
from .json_report import atomic_write_text
from .markdown import cell, code_span
from .repro import curl_for, mlflow_for

__all__ = ["ISSUE_FILE", "IssueReport", "deployment_name", "expected_for", "render_issues", "write_issues"]

#: The file name of the n-th report (1-based, primary first): ``01-SERVICE_ID_REJECTED.md``.
ISSUE_FILE = re.compile(r"^\d{2}-[A-Z0-9_]+\.md$")
#: At most this many exchanges are reproduced per finding (the failing ones first).
MAX_REPRO = 4
CONTRACT = "platform contract"  #: how a report cites the shared contract (contract/hokusai-platform.md)


@dataclass(frozen=True)
class IssueReport:
    """One rendered report."""

    code: str
    owner: str
    primary: bool
    accepted: bool
    filename: str
    title: str
    text: str


def deployment_name(target: Mapping[str, Any]) -> str:
    """The deployment as people name it: the API URL's host (with its port when it has one)."""
    url = str(target.get("api_url") or "")
    try:
        parts = urlsplit(url)
        return parts.netloc or url or "unknown deployment"
    except ValueError:
        return url or "unknown deployment"


def _match_exchanges(evidence: Sequence[str], exchanges: Sequence[Exchange]) -> list[Exchange]:
    """The recorded exchanges a finding's evidence lines quote (``Exchange.summary()``), in order."""
    by_line: dict[str, Exchange] = {}
    for exchange in exchanges:
        by_line.setdefault(scrub(exchange.summary()), exchange)
    found: list[Exchange] = []
    for line in evidence:
        match = by_line.get(scrub(str(line)))
        if match is not None and match not in found:
            found.append(match)
    return found


def _failed(exchange: Exchange) -> bool:
    return exchange.status is None or exchange.status >= 400


def _order_for_repro(exchanges: Sequence[Exchange], tracking_uri: str) -> list[Exchange]:
    """Failing exchanges first (those on the tracking URI, which third parties use, before the
    rest), then the passing ones the evidence contrasts them with."""
    def rank(exchange: Exchange) -> tuple[int, int]:
        third_party = exchange.url.startswith(tracking_uri.rstrip("/") + "/")
        return (0 if _failed(exchange) else 1, 0 if third_party else 1)

    return sorted(exchanges, key=rank)[:MAX_REPRO]


def _answer(exchange: Exchange) -> str:
    if exchange.status is None:
        return f"no HTTP answer ({exchange.error or 'error'}: {exchange.error_detail or ''})".rstrip(": )") + ")"
    kind = f" {exchange.content_type.split(';')[0]}" if exchange.content_type else ""
    body = f" {exchange.body_excerpt}" if exchange.body_excerpt else ""
    return f"{exchange.status}{kind}{body}"


def expected_for(exchange: Exchange, target: Mapping[str, Any], key_vars: Mapping[str, str]) -> str:
    """What the contract says a healthy platform answers to this request."""
    url = exchange.url
    path = urlsplit(url).path
    tracking = str(target.get("tracking_uri") or "").rstrip("/")
    direct = str(target.get("direct_mlflow_url") or "").rstrip("/")
    masked = exchange.auth.rsplit(" ", 1)[-1].split("=", 1)[-1]
    keyed = exchange.auth != "none"
    good_key = keyed and key_vars.get(masked) in ("HOKUSAI_API_KEY", "HOKUSAI_READONLY_API_KEY")
    if path.endswith("/api/v1/keys/validate"):
        if good_key:
            return ("200 with a ValidationResult (`is_valid: true`, the key's `service_id`, `scopes`): the real auth "
                    "service takes the key as `Authorization: Bearer` or as body `api_key`, and checks a given "
                    "`service_id` against the key's registered service (website, prediction or platform) "
                    f"({CONTRACT} §2.2)")
        return (f"401 `{{\"detail\": ...}}` for an unknown, expired or revoked key ({CONTRACT} §2.2, F5)")
    if path.endswith("/api/health/mlflow"):
        return f"200: the API service reaches MLflow ({CONTRACT} §7, triage step 6)"
    if path.endswith("/health") or path in ("", "/"):
        return (f"200 from the service itself, not an HTML or text page of the balancer ({CONTRACT} §7, "
                "triage step 2)")
    if tracking and url.startswith(tracking + "/"):
        if not keyed:
            return ("401 `{\"detail\": \"API key required\"}` from the API's auth middleware, before any routing "
                    f"({CONTRACT} §7, triage step 3)")
        if good_key:
            return ("2xx with MLflow's own JSON: the API validates the key (`Authorization: Bearer`, service_id "
                    "platform) and forwards the request, key included, to MLflow unchanged "
                    f"({CONTRACT} §0, §5; §7, triage step 4)")
        return (f"401 `{{\"detail\": \"Invalid or expired API key\"}}` for a key the auth service rejects ({CONTRACT} "
                "§7, F5)")
    if direct and url.startswith(direct):
        return f"MLflow's own answer (200 for its health and REST routes) ({CONTRACT} §1)"
    return f"a 2xx answer ({CONTRACT} §7)"


def _since(code: str, report: Mapping[str, Any], baseline: Mapping[str, Any] | None,
           baseline_path: str | None, now: str) -> list[str]:
    if baseline is None:
        return [(f"First seen in this run ({now}). No baseline was given: run with "
                "`--hokusai-baseline=<an earlier --hokusai-report-json file>` to say since when it fails.")]
    then = str(baseline.get("finished_at") or baseline.get("started_at") or baseline.get("generated_at") or "")
    if not then and baseline_path:
        try:
            then = datetime.fromtimestamp(os.path.getmtime(baseline_path), timezone.utc).isoformat(
                timespec="seconds").replace("+00:00", "Z") + " (file time)"
        except OSError:
            then = "unknown time"
    name = f"`{Path(baseline_path).name}`" if baseline_path else "the baseline"
    old_codes = {str(d.get("code")) for d in baseline.get("diagnoses") or [] if isinstance(d, Mapping)}
    if code in old_codes:
        return [f"Not new: the baseline run {name} ({then}) already reported `{code}`; it still fails now ({now})."]
    failing_now = [str(c.get("nodeid")) for c in report.get("checks") or []
                   if c.get("outcome") in ("failed", "error") and c.get("diagnosis") == code]
    if not failing_now:
        failing_now = [str(c.get("nodeid")) for c in report.get("checks") or []
                       if c.get("outcome") in ("failed", "error")]
    old = {str(c.get("nodeid")): str(c.get("outcome")) for c in baseline.get("checks") or [] if isinstance(c, Mapping)}
    passed_then = [n for n in failing_now if old.get(n) == "passed"]
    verdict = str(baseline.get("verdict") or "unknown")
    if passed_then or verdict == "pass":
        shown = ", ".join(f"`{n.rsplit('/', 1)[-1]}`" for n in (passed_then or failing_now)[:5])
        return [(f"Passing in the baseline run {name} ({then}, verdict {verdict}) and failing now ({now}): it "
                "broke between the two runs."), "", f"Checks that passed then and fail now: {shown or 'none named'}."]
    return [(f"The baseline run {name} ({then}, verdict {verdict}) did not report `{code}`, but the checks failing "
            f"now did not pass then either; first reported in this run ({now}).")]


def _versions(report: Mapping[str, Any], plugin_version: str) -> list[str]:
    versions = dict((report.get("target") or {}).get("versions") or {})
    versions.update(report.get("versions") or {})
    rows = [("pytest-hokusai", plugin_version)]
    rows += [(name, value) for name, value in versions.items() if name not in ("pytest-hokusai", "plugin")]
    return ["| component | version |", "| --- | --- |"] + [
        f"| {cell(name)} | {cell(value if value else 'not installed')} |" for name, value in rows]


def _repro_section(exchanges: Sequence[Exchange], target: Mapping[str, Any], key_vars: Mapping[str, str]
                   ) -> list[str]:
    tracking = str(target.get("tracking_uri") or "")
    ordered = _order_for_repro(exchanges, tracking)
    used_vars: list[str] = []
    for exchange in ordered:
        for masked, var in key_vars.items():
            if (masked in exchange.auth or masked in (exchange.request_body or "")) and var not in used_vars:
                used_vars.append(var)
    lines = ["## Reproduce", ""]
    exports = used_vars or ["HOKUSAI_API_KEY"]
    lines += [(f"Set {', '.join(f'`{v}`' for v in exports)} to the key(s) the run used (never paste a key into "
              "the issue), then:"), "", "### curl", ""]
    if not ordered:
        lines += [("No HTTP exchange is part of this finding's evidence (it was found before any request, or "
                  "from facts the checks learned); see the evidence below."), ""]
    else:
        lines.append("```bash")
        setup: list[str] = []
        for i, exchange in enumerate(ordered):
            repro = curl_for(exchange, key_vars)
            for line in repro.setup:
                if line not in setup:
                    setup.append(line)
                    lines.append(line)
            role = "the failing request" if _failed(exchange) else "for comparison, a request that works"
            lines.append(f"# {i + 1}. {role}; recorded answer: {_one_line(_answer(exchange), 200)}")
            if repro.note:
                lines.append(f"#    ({repro.note})")
            lines.append(repro.command)
        lines += ["```", ""]
    failing = next((e for e in ordered if _failed(e)), None)
    snippet = mlflow_for(failing, tracking, key_vars)
    if failing is not None:
        snippet += f"\n# the run recorded: {_one_line(_answer(failing), 160)}"
    lines += ["### MLflow client", "", "```python", snippet, "```", ""]
    return lines


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _expected_section(exchanges: Sequence[Exchange], finding: Mapping[str, Any], texts: Any,
                      target: Mapping[str, Any], key_vars: Mapping[str, str]) -> list[str]:
    lines = ["## Expected against actual", ""]
    failing = [e for e in _order_for_repro(exchanges, str(target.get("tracking_uri") or "")) if _failed(e)]
    if failing:
        lines += ["| request | expected (contract) | actual |", "| --- | --- | --- |"]
        for exchange in failing:
            lines.append(f"| {cell(exchange.method + ' ' + exchange.url)} | {cell(expected_for(exchange, target, key_vars))}"
                         f" | {cell(_one_line(_answer(exchange), 240))} |")
        lines.append("")
    if texts is not None:
        lines += [(f"The failure catalogue ({CONTRACT} §7, {texts.history}) describes this case: "
                  f"{texts.symptom}"), ""]
    lines += [f"Seen in this run: {' '.join(str(finding.get('summary') or '').split())}", ""]
    return lines


def render_issues(
    report: Mapping[str, Any],
    exchanges: Iterable[Exchange],
    *,
    key_vars: Mapping[str, str],
    accepted: Iterable[str] = (),
    baseline: Mapping[str, Any] | None = None,
    baseline_path: str | None = None,
    plugin_version: str = "unknown",
    now: datetime | None = None,
) -> list[IssueReport]:
    """One :class:`IssueReport` per diagnosis of a ``pytest-hokusai/1`` ``report``, primary first.

    ``exchanges`` are the run's recorded exchanges (the evidence lines are matched to them to build
    the reproductions); ``key_vars`` maps each key's masked form to the environment variable that
    holds it; ``accepted`` are the codes accepted as known issues (a diagnosis's own ``accepted``
    counts too).
    """
    from ..diagnosis.catalog import TEXTS
    from ..diagnosis.ownership import OWNER_TEAMS, impact_of, owner_of

    recorded = list(exchanges)
    known = set(accepted)
    target = dict(report.get("target") or {})
    deployment = deployment_name(target)
    moment = now or datetime.now(timezone.utc)
    stamp = moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    diagnoses = sorted((d for d in report.get("diagnoses") or [] if isinstance(d, Mapping)),
                       key=lambda d: not d.get("primary"))
    names = [f"{i:02d}-{d.get('code') or 'UNEXPECTED_RESPONSE'}.md" for i, d in enumerate(diagnoses, 1)]
    out: list[IssueReport] = []
    for index, finding in enumerate(diagnoses, 1):
        code = str(finding.get("code") or "UNEXPECTED_RESPONSE")
        owner = str(finding.get("owner") or owner_of(code))
        is_accepted = bool(finding.get("accepted")) or code in known
        texts = TEXTS.get(code)
        title = f"{code} on {deployment}: {texts.title if texts else _one_line(str(finding.get('summary')), 80)}"
        evidence = [str(e) for e in finding.get("evidence") or []]
        matched = _match_exchanges(evidence, recorded)
        role = "root cause" if finding.get("primary") else "consequence or independent finding"
        lines = [f"# {title}" + (" [known issue]" if is_accepted else ""), ""]
        if is_accepted:
            lines += [("> **Known issue**: accepted with `--hokusai-accept`. It is reported, and the checks it "
                      "explains are expected failures: it does not fail the verdict."), ""]
        lines += [
            "| | |", "| --- | --- |",
            f"| Owner | `{owner}`: {cell(OWNER_TEAMS.get(owner, ''))} |",
            (f"| Code | `{code}` ({cell(finding.get('category'))}), {role} of run verdict "
            f"**{str(report.get('verdict', '?')).upper()}** |"),
            (f"| Deployment | API {cell(target.get('api_url'))}, auth {cell(target.get('auth_url'))}, tracking URI "
            f"{cell(target.get('tracking_uri'))} |"),
            f"| Key used | {cell(target.get('key'))} (masked) |",
            f"| Reported | {stamp} by pytest-hokusai {plugin_version} |",
            *([f"| Same run | {cell(', '.join(n + (' (root cause)' if i == 0 else '') for i, n in enumerate(names) if i != index - 1))} |"]
              if len(names) > 1 else []),
            "",
            "## Impact on third parties", "", impact_of(code, str(finding.get("category") or "")), "",
            "## Since when", "", *_since(code, report, baseline, baseline_path, stamp), "",
        ]
        lines += _repro_section(matched, target, key_vars)
        lines += _expected_section(matched, finding, texts, target, key_vars)
        lines += ["## Evidence", "", "Redacted exchanges and facts, as the run recorded them:", ""]
        lines += [f"- {code_span(e)}" for e in evidence] or ["- (none recorded)"]
        lines.append("")
        lines += ["## Remedy", "", " ".join(str(finding.get("remediation") or (texts.fix if texts else "")).split()), ""]
        lines += ["## Versions", "", *_versions(report, plugin_version), ""]
        text = scrub("\n".join(lines).rstrip() + "\n")
        out.append(IssueReport(code=code, owner=owner, primary=bool(finding.get("primary")), accepted=is_accepted,
                               filename=f"{index:02d}-{code}.md", title=title, text=text))
    return out


def write_issues(directory: str | os.PathLike[str], issues: Sequence[IssueReport]) -> list[Path]:
    """Write each report into ``directory`` (created), after removing the reports an earlier run left
    there (files named like ``01-CODE.md``; nothing else is touched). Returns the paths written."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file() and ISSUE_FILE.match(old.name):
            old.unlink()
    return [atomic_write_text(folder / issue.filename, issue.text) for issue in issues]
