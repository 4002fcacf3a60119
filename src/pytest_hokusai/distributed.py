"""pytest-xdist glue: what a worker's reports carry to the controller, and what the controller
hands to the workers.

A live check's report carries (in its ``hokusai`` attribute, which xdist serialises) the exchanges,
the facts its checks found and the leftovers it recorded; the controller adds them to the run's
state, so its diagnosis, reports and leftovers list cover every worker. The controller hands its
local stack to every worker (:class:`HokusaiXdist`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .evidence import Exchange
from .local import WORKERINPUT_KEY
from .runtime import HokusaiRun
from .state import Leftover, RunState

if TYPE_CHECKING:  # the diagnosis package is imported only once a check fails or the run ends
    from .diagnosis.evidence import TriageEvidence

__all__ = ["HokusaiXdist", "add_worker_facts", "merge_worker_facts", "receive_from_worker"]


class HokusaiXdist:
    """Hand the controller's local stack to every worker."""

    def __init__(self, run: HokusaiRun) -> None:
        self.run = run

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.run.local is not None:
            node.workerinput[WORKERINPUT_KEY] = self.run.local.ensure().to_wire()


def merge_worker_facts(known: dict[str, Any], facts: dict[str, Any]) -> None:
    """Add one report's facts to the controller's: latency misses accumulate (each once), any other
    fact takes the latest value."""
    from .diagnosis.evidence import FACT_LATENCY_MISSES

    for name, value in facts.items():
        if name == FACT_LATENCY_MISSES:
            misses = known.setdefault(name, [])
            misses.extend(m for m in value if m not in misses)
        else:
            known[name] = value


def add_worker_facts(evidence: TriageEvidence, worker_facts: dict[str, Any]) -> None:
    """Put the workers' facts into the controller's evidence (latency misses one by one)."""
    from .diagnosis.evidence import FACT_LATENCY_MISSES

    for name, value in worker_facts.items():
        if name == FACT_LATENCY_MISSES:
            for miss in value:
                evidence.add_latency_miss(miss)
        else:
            evidence.add_fact(name, value)


def receive_from_worker(state: RunState, data: dict[str, Any], exchanges: list[Exchange]) -> None:
    """Record a worker's exchanges and leftovers in the controller's state."""
    for ex in exchanges:
        state.recorder.add(ex)
    for left in data.get("leftovers") or []:
        state.add_leftover(Leftover(**left))
