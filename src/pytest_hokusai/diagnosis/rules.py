"""Evidence in, findings out: the rules table keyed by the diagnosis codes, and the precedence
that picks the root cause.

:data:`RULES` maps every code of DESIGN.md's table to a :class:`Rule`: its fixed texts (from
:mod:`.catalog`) and its matcher (from the :mod:`.matchers` package, one module per category),
which builds the summary, evidence and remediation from what the probes and checks saw. :func:`diagnose` runs them all and marks exactly one
finding ``primary``: the first in :data:`PRECEDENCE` (network, then credentials known before any
request, deployment, configuration and credentials, artifact-only, security). UNEXPECTED_RESPONSE is
reported only when no functional rule explains a failure, and LATENCY_BUDGET_EXCEEDED (a perf check
missed a budget or regressed) ranks below everything: it is primary only when the only failures are
performance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..evidence import Exchange
from ..secret import redact
from ..state import Finding
from .catalog import CODES, TEXTS
from .evidence import FACT_LATENCY_MISSES, TriageEvidence
from .matchers import MATCHERS, Match, Matcher, said, where
from .matchers.client import SDK_CODES
from .matchers.latency import LATENCY_CODE
from .matchers.suite import SUITE_CODE

__all__ = ["PRECEDENCE", "RULES", "Match", "Rule", "diagnose", "finding_for_failure"]


@dataclass(frozen=True)
class Rule:
    """One diagnosis code: its fixed texts (for reports and docs) and its matcher."""

    code: str
    category: str
    title: str
    symptom: str
    cause: str
    fix: str
    history: str
    matcher: Matcher = field(repr=False, compare=False)

    def match(self, evidence: TriageEvidence) -> Finding | None:
        """A (non-primary) finding when this rule's tell is in the evidence, else ``None``."""
        found = self.matcher(evidence)
        if found is None:
            return None
        lines: list[str] = []
        for item in found.evidence:
            if item is None:
                continue
            line = redact(item.summary() if isinstance(item, Exchange) else str(item))
            if line not in lines:
                lines.append(line)
        return Finding(code=self.code, category=self.category, summary=redact(found.summary), evidence=lines,
                       remediation=redact(found.remediation or self.fix))


# -- the table, precedence, entry points ------------------------------------------------------------
_MATCHERS: dict[str, Matcher] = MATCHERS

RULES: dict[str, Rule] = {
    code: Rule(code=code, category=TEXTS[code].category, title=TEXTS[code].title, symptom=TEXTS[code].symptom,
               cause=TEXTS[code].cause, fix=TEXTS[code].fix, history=TEXTS[code].history, matcher=_MATCHERS[code])
    for code in CODES
}

_UNEXPECTED = "UNEXPECTED_RESPONSE"

#: Root cause first: network > credentials known before any request > deployment >
#: configuration and credentials > artifact-only > security > unexplained > performance only.
PRECEDENCE: tuple[str, ...] = (
    "HOST_UNREACHABLE", "TLS_ERROR",
    "KEY_MISSING", "KEY_MALFORMED",
    "NOT_HOKUSAI_API",
    "API_SERVICE_DOWN", "ROUTE_NOT_CONFIGURED", "AUTH_SERVICE_DOWN", "AUTH_SERVICE_MISROUTED",
    "PROXY_ROUTE_NOT_MOUNTED", "MLFLOW_UNREACHABLE", "MLFLOW_PATH_MISMATCH",
    "AUTH_CONTRACT_MISMATCH", "SERVICE_ID_REJECTED", "KEY_REJECTED", "PROXY_STRIPS_AUTH", "HOST_HEADER_REJECTED",
    "REGISTRY_ADMIN_REQUIRED", "PAYMENT_REQUIRED", "RATE_LIMITED", "KEY_LACKS_WRITE_SCOPE", "CLIENT_TOKEN_LOST",
    "PROXY_DROPS_REQUEST_BODY",
    "ARTIFACTS_DISABLED",
    # The stock client registers but the SDK fails: below every platform code that explains both.
    *SDK_CODES,
    "AUTH_BYPASS", "REVOCATION_DELAYED",
    _UNEXPECTED,
    SUITE_CODE,
    LATENCY_CODE,
)
assert set(PRECEDENCE) == set(RULES) == set(_MATCHERS), "every code needs one rule and one rank"
assert PRECEDENCE[-3:] == (_UNEXPECTED, SUITE_CODE, LATENCY_CODE), (
    "unexplained, then the suite's own errors, then performance only, rank last")
#: The functional rules, in precedence order (everything but the three fallbacks).
_FUNCTIONAL: tuple[str, ...] = PRECEDENCE[:-3]


def diagnose(evidence: TriageEvidence) -> list[Finding]:
    """All findings, root cause first; exactly one is ``primary`` when there is any.

    UNEXPECTED_RESPONSE appears only when no functional rule matched. LATENCY_BUDGET_EXCEEDED comes
    last: a functional (or unexplained) failure stays primary, and it is primary only when the only
    failures are performance.
    """
    findings = [f for code in _FUNCTIONAL if (f := RULES[code].match(evidence)) is not None]
    if not findings:
        unexpected = RULES[_UNEXPECTED].match(evidence)
        findings = [unexpected] if unexpected is not None else []
    suite = RULES[SUITE_CODE].match(evidence)  # errors of the suite itself: never the deployment's code
    if suite is not None:
        findings.append(suite)
    latency = RULES[LATENCY_CODE].match(evidence)
    if latency is not None:
        findings.append(latency)
    for i, finding in enumerate(findings):
        finding.primary = i == 0
    return findings


def finding_for_failure(evidence: TriageEvidence, exchanges: Iterable[Exchange]) -> Finding | None:
    """The finding that explains one failing check, given the exchanges that check made.

    A check that recorded a latency miss (its exchanges' ``nodeid`` is the miss's) gets
    LATENCY_BUDGET_EXCEEDED for its own measures. Otherwise the check's exchanges are added to the
    evidence; the finding whose evidence cites one of them wins, else the run's root cause. With no
    finding at all, a failing exchange of the check gives UNEXPECTED_RESPONSE; with none, ``None``.
    """
    exchanges = list(exchanges)
    own_latency = _latency_for(evidence, {x.nodeid for x in exchanges if x.nodeid})
    if own_latency is not None:
        return own_latency
    own = [x for x in exchanges if not any(x is y for y in evidence.exchanges)]
    combined = dataclasses.replace(evidence, exchanges=[*evidence.exchanges, *own])
    findings = diagnose(combined)
    check_lines = {redact(x.summary()) for x in exchanges}
    for finding in findings:
        if check_lines.intersection(finding.evidence):
            return _single(finding)
    if findings:
        return _single(findings[0])
    failing = [x for x in exchanges if not x.ok]
    if not failing:
        return None
    first = failing[-1]
    return Finding(code="UNEXPECTED_RESPONSE", category=RULES["UNEXPECTED_RESPONSE"].category, primary=False,
                   summary=redact(f"{where(first)} got {said(first)}, which no rule explains."),
                   evidence=[redact(x.summary()) for x in failing[-3:]], remediation=RULES["UNEXPECTED_RESPONSE"].fix)


def _latency_for(evidence: TriageEvidence, nodeids: set[str]) -> Finding | None:
    """LATENCY_BUDGET_EXCEEDED limited to the misses the given checks recorded, or ``None``."""
    mine = [m for m in evidence.latency_misses() if m.get("nodeid") in nodeids]
    if not mine:
        return None
    scoped = dataclasses.replace(evidence, facts={**evidence.facts, FACT_LATENCY_MISSES: mine})
    found = RULES[LATENCY_CODE].match(scoped)
    return _single(found) if found is not None else None


def _single(finding: Finding) -> Finding:
    return dataclasses.replace(finding, primary=False, evidence=list(finding.evidence))
