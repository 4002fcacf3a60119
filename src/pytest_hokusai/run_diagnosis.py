"""Diagnosis during the run: the code of one failing check, and the run's findings at its end.

A failing check first asks the triage for its code (:func:`diagnose_failure`); once the triage
shows a blocking root cause (nothing answers), :mod:`.hooks_impl` fails the remaining live checks
at once. At the end, :func:`diagnose_run` combines the triage, the facts and exchanges of every
check (xdist workers' included) and the suite's own errors into the run's findings.
"""

from __future__ import annotations

from typing import Any

from .evidence import Exchange
from .runtime import HokusaiRun
from .secret import redact
from .state import Finding

__all__ = ["BLOCKING_CODES", "diagnose_failure", "diagnose_run", "is_diagnostic"]

#: Root causes after which no further live check can tell anything new.
BLOCKING_CODES = frozenset({"HOST_UNREACHABLE", "TLS_ERROR"})


def is_diagnostic(exchange: Exchange) -> bool:
    """Exchanges the rules may read: not the triage's own probes (already in the evidence) and not
    the discovery matrix, whose era-dependent 404s are recorded as information only, and not the
    failures a check provoked on purpose (``check:provoked:``)."""
    label = exchange.label or ""
    return not label.startswith(("probe:", "check:discovery:", "check:provoked:"))


def diagnose_failure(run: HokusaiRun, exchanges: list[Exchange]) -> Finding | None:
    """The finding that explains one failing check (``None`` if the diagnosis itself fails)."""
    try:
        evidence = run.ensure_triage()
        from .diagnosis import diagnose, finding_for_failure

        if run.blocker is None:
            primary = next((f for f in diagnose(evidence) if f.primary), None)
            if primary is not None and primary.code in BLOCKING_CODES:
                run.blocker = primary

        return finding_for_failure(evidence, [e for e in exchanges if is_diagnostic(e)])
    except Exception as exc:  # noqa: BLE001 - diagnosis must never hide the check's own failure
        run.triage_error = redact(f"{type(exc).__name__}: {exc}")
        return None


def diagnose_run(run: HokusaiRun, worker_facts: dict[str, Any], suite_errors: list[str]) -> None:
    """Set ``run.state.findings`` when a live check failed (or an accepted known issue explains one).

    Never leaves a failing run without a finding: the suite's own errors give SUITE_ERROR, anything
    else no rule explains gives UNEXPECTED_RESPONSE naming the failed checks.
    """
    from .distributed import add_worker_facts

    state = run.state
    live = state.live_checks
    accepted = run.base_settings.accept
    explained = any(c.outcome == "xfailed" and c.diagnosis in accepted for c in live)
    if not (any(c.outcome in ("failed", "error") for c in live) or explained):
        return
    try:
        evidence = run.ensure_triage()
        add_worker_facts(evidence, worker_facts)
        evidence.exchanges.extend(e for e in state.recorder.all()
                                  if is_diagnostic(e) and e not in evidence.exchanges)
        if suite_errors:
            from .diagnosis.matchers.suite import FACT_SUITE_ERRORS

            evidence.add_fact(FACT_SUITE_ERRORS, list(suite_errors))
        from .diagnosis import diagnose

        state.findings = diagnose(evidence)
    except Exception as exc:  # noqa: BLE001 - a broken diagnosis still leaves the fallbacks below
        run.triage_error = redact(f"{type(exc).__name__}: {exc}")
    if not state.findings and suite_errors:
        from .diagnosis.matchers.suite import suite_run_finding

        state.findings = [suite_run_finding(suite_errors)]
    from .known_issues import mark_accepted

    mark_accepted(state.findings, accepted)
    failed = [c for c in live if c.outcome in ("failed", "error")]
    if not state.findings and failed:
        state.findings = [Finding(
            code="UNEXPECTED_RESPONSE", category="other", primary=True,
            summary=f"{len(failed)} live check(s) failed and no rule explains it.",
            evidence=[f"{c.nodeid}: {c.message}" for c in failed[:10]]
            + ([f"diagnosis error: {run.triage_error}"] if run.triage_error else []),
            remediation="Read the failing checks' transcripts in the HTML report and the evidence above.",
        )]
