"""UNEXPECTED_RESPONSE: a probe or a check failed and no other rule explains it.

:mod:`.rules` reports it only when no functional rule matched.
"""

from __future__ import annotations

from ...evidence import Exchange
from .. import evidence as ev
from ..evidence import TriageEvidence
from .base import Match, Matcher, said, where

__all__ = ["MATCHERS"]


_EXPECTED_401 = (ev.PROXY_NO_KEY, ev.PROXY_UNKNOWN_KEY, ev.PROXY_REVOKED_KEY)


def _unexpected(e: TriageEvidence) -> Match | None:
    odd: list[tuple[str, Exchange]] = []
    for name, ex in e.probes.items():
        expected_401 = name in _EXPECTED_401 and ex.status not in (401, 403)
        if (name in ev.EXPECT_2XX or expected_401) and not ex.ok:
            odd.append((name, ex))
    slow = {m.get("nodeid") for m in e.latency_misses()}  # explained by LATENCY_BUDGET_EXCEEDED
    failed = [f"check {nodeid} failed: {msg}".rstrip(": ") for nodeid, msg in e.failed_checks.items()
              if nodeid not in slow]
    if not odd and not failed:
        return None
    if odd:
        name, first = odd[0]
        more = f" (and {len(odd) - 1} more probe(s))" if len(odd) > 1 else ""
        summary = f"The {name} probe got {said(first)} from {where(first)}, which no rule explains{more}."
    else:
        summary = f"{len(failed)} check(s) failed and no probe shows a known failure."
    return Match(summary, [*[x for _, x in odd], *failed])


MATCHERS: dict[str, Matcher] = {
    "UNEXPECTED_RESPONSE": _unexpected,
}
