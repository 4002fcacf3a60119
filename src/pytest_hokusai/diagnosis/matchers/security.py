"""The security codes: keys are not enforced, or a revoked key is still served.
"""

from __future__ import annotations

import time

from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence
from .base import Match, Matcher, where

__all__ = ["MATCHERS", "REVOCATION_GRACE_S"]


def _bypass(e: TriageEvidence) -> Match | None:
    # Only MLflow's own JSON counts as served: an HTML page or another service's JSON is NOT_HOKUSAI_API.
    served = [(what, x) for what, x in (("no key", e.probe(ev.PROXY_NO_KEY)),
                                        ("a well-formed key nobody minted", e.probe(ev.PROXY_UNKNOWN_KEY)))
              if x is not None and x.ok and t.is_mlflow_search(x)]
    if not served:
        return None
    whats = " and ".join(w for w, _ in served)
    return Match(f"The proxy serves MLflow to requests with {whats}: {where(served[0][1])} -> "
                 f"{served[0][1].status}. Keys are not enforced.", [x for _, x in served])


#: How long the platform may keep serving a revoked key from its validation cache (contract F5).
REVOCATION_GRACE_S = 60.0


def _revocation(e: TriageEvidence) -> Match | None:
    delay = e.facts.get(ev.FACT_REVOCATION_DELAY)
    tolerance = float(e.facts.get(ev.FACT_REVOCATION_TOLERANCE) or 0.0)
    if isinstance(delay, (int, float)) and delay > tolerance:
        allowed = f" (allowed: {tolerance:.0f} s)" if tolerance else ""
        return Match(f"A revoked key was still served {delay:.0f} s after its revocation{allowed}.",
                     [f"fact: {ev.FACT_REVOCATION_DELAY} = {delay:.1f}"])
    revoked, unknown = e.probe(ev.PROXY_REVOKED_KEY), e.probe(ev.PROXY_UNKNOWN_KEY)
    if revoked is None or not revoked.ok or t.ok(unknown):
        return None
    revoked_at = e.facts.get(ev.FACT_REVOKED_AT)
    if isinstance(revoked_at, (int, float)) and time.time() - revoked_at < REVOCATION_GRACE_S:
        return None
    since = f" {time.time() - revoked_at:.0f} s after its revocation" if isinstance(revoked_at, (int, float)) else ""
    return Match(f"The revoked key {e.revoked_key_masked or ''} is still served by the proxy{since} "
                 f"({where(revoked)} -> {revoked.status}).".replace("  ", " "), [revoked])


MATCHERS: dict[str, Matcher] = {
    "AUTH_BYPASS": _bypass,
    "REVOCATION_DELAYED": _revocation,
}
