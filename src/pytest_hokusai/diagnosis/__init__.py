"""Root-cause diagnosis: triage probes -> evidence -> findings (one primary), plus the generated
troubleshooting guide.

* :func:`run_triage` probes the target in the contract's triage order, bounded in time, and returns
  a :class:`TriageEvidence` (with no key or a malformed one it sends nothing);
* :func:`diagnose` turns the evidence into findings, root cause first (exactly one ``primary``);
* :func:`finding_for_failure` attaches a code to one failing check;
* :data:`RULES` is the table keyed by the DESIGN.md diagnosis codes (texts + matchers);
* ``python -m pytest_hokusai.diagnosis.docs`` regenerates ``docs/troubleshooting.md`` from it.

Importing this package imports no heavy library (requests only, through the triage's session type).
"""

from __future__ import annotations

from .evidence import (
    FACT_LATENCY_MISSES,
    FACT_REVOCATION_DELAY,
    FACT_REVOCATION_TOLERANCE,
    FACT_REVOKED_AT,
    FACT_TRACKING_TOKEN_PRESENT,
    FACT_TRACKING_URI_MOVED_TO,
    MLFLOW_CLIENT_LABEL,
    TriageEvidence,
    latency_miss,
)
from .probes import run_triage
from .rules import PRECEDENCE, RULES, Rule, diagnose, finding_for_failure

__all__ = [
    "FACT_LATENCY_MISSES",
    "FACT_REVOCATION_DELAY",
    "FACT_REVOCATION_TOLERANCE",
    "FACT_REVOKED_AT",
    "FACT_TRACKING_TOKEN_PRESENT",
    "FACT_TRACKING_URI_MOVED_TO",
    "MLFLOW_CLIENT_LABEL",
    "PRECEDENCE",
    "RULES",
    "Rule",
    "TriageEvidence",
    "diagnose",
    "finding_for_failure",
    "latency_miss",
    "run_triage",
]
