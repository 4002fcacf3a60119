"""Which hosts of the target have answered in this run: the connect/first-byte budget.

A host that accepts the TCP connection but never sends a status would otherwise cost the full
per-request timeout (``--hokusai-timeout``, 10 s) on the first check and again in the triage. The
first request to each host (``host:port``) therefore gets a short, separate budget
(``--hokusai-connect-timeout``) for connecting *and* for the first byte of the answer. Once a host
has answered anything, its later requests get the normal timeout (a slow upload is not cut
short). A host that gave no answer within the budget is remembered with the exchange that showed
it, so the triage does not wait on it a second time and reuses that evidence instead.

One :class:`HostReachability` is shared by every session of a run (``HokusaiRun.reachability``).
This module imports nothing heavy.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from .evidence import Exchange

__all__ = ["HostReachability", "cap_timeout", "host_key"]

def host_key(url: str) -> str:
    """``host:port`` of a URL (the unit of reachability, as in the diagnosis)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return parts.netloc.rsplit("@", 1)[-1] or url


def cap_timeout(timeout: Any, budget: float) -> Any:
    """``timeout`` (seconds, or a requests ``(connect, read)`` pair) with both parts at most ``budget``."""
    if isinstance(timeout, tuple) and len(timeout) == 2:
        connect, read = timeout
        return (budget if connect is None else min(float(connect), budget),
                budget if read is None else min(float(read), budget))
    if timeout is None:
        return (budget, budget)
    return (min(float(timeout), budget), min(float(timeout), budget))


class HostReachability:
    """The run's record of hosts that answered and hosts that did not (thread-safe)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = float(budget_s)
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._silent: dict[str, Exchange] = {}

    def budget_for(self, url: str) -> float | None:
        """The first-contact budget for a request to ``url``, or ``None`` once its host has answered."""
        with self._lock:
            return None if host_key(url) in self._answered else self.budget_s

    def mark_answered(self, url: str) -> None:
        """Note that the host of ``url`` answered (a status came back)."""
        host = host_key(url)
        with self._lock:
            self._answered.add(host)
            self._silent.pop(host, None)

    def note_no_answer(self, exchange: Exchange) -> None:
        """Remember a first-contact request that timed out without a status (the first such exchange).

        Only timeouts: a refused or unresolvable host fails in milliseconds, so the triage simply
        asks it again and keeps its usual evidence.
        """
        if exchange.status is not None or exchange.error != "timeout":
            return
        host = host_key(exchange.url)
        with self._lock:
            if host not in self._answered:
                self._silent.setdefault(host, exchange)

    def silent_hosts(self) -> dict[str, Exchange]:
        """``host:port`` -> the exchange that showed it does not answer (hosts that never answered)."""
        with self._lock:
            return dict(self._silent)
