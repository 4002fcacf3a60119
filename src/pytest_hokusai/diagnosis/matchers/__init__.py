"""The matchers behind :data:`~..rules.RULES`: one function per diagnosis code, assembled here.

Each reads a :class:`~..evidence.TriageEvidence` and, when its tell (DESIGN.md's table, contract
section 7) is there, returns a :class:`Match`: a one-sentence summary built from what was seen, the
decisive exchanges, and a remediation naming what to change where (empty: the code's generic fix).
Tells in the checks' own exchanges count only for requests made with the primary key, presented in
an accepted style, to the MLflow REST API under the tracking URI, so a check's deliberate negative
request (no key, another key, the key sent wrongly, an exploratory path) is never read as a fault.

One module per category of the catalog (:mod:`..catalog`), each ending in its ``MATCHERS`` table:
:mod:`.network`, :mod:`.deployment`, :mod:`.configuration`, :mod:`.credentials`, :mod:`.security`
and :mod:`.client` (CLIENT_TOKEN_LOST and the SDK codes, which read what the SDK checks record).
The category ``other`` holds three fallbacks with machinery of their own, one module each:
:mod:`.unexpected`, :mod:`.suite` (SUITE_ERROR) and :mod:`.latency` (LATENCY_BUDGET_EXCEEDED).
:mod:`.base` has :class:`Match` and the readings of the evidence several modules share.
"""

from __future__ import annotations

from . import client, configuration, credentials, deployment, network, security, unexpected
from .base import Match, Matcher, said, where
from .latency import LATENCY_CODE, match_latency
from .security import REVOCATION_GRACE_S
from .suite import SUITE_CODE, match_suite_error

__all__ = ["MATCHERS", "REVOCATION_GRACE_S", "Match", "Matcher", "said", "where"]


def _assemble(*tables: dict[str, Matcher]) -> dict[str, Matcher]:
    merged: dict[str, Matcher] = {}
    for table in tables:
        twice = merged.keys() & table.keys()
        assert not twice, f"codes with two matchers: {sorted(twice)}"
        merged.update(table)
    return merged


#: Every code's matcher (:mod:`..rules` asserts that every catalog code has exactly one).
MATCHERS: dict[str, Matcher] = _assemble(
    network.MATCHERS, deployment.MATCHERS, configuration.MATCHERS, credentials.MATCHERS, security.MATCHERS,
    client.MATCHERS, unexpected.MATCHERS, {SUITE_CODE: match_suite_error, LATENCY_CODE: match_latency},
)
