"""The run's shared state: check outcomes, findings and timings, read by the diagnosis and the
reports. One :class:`RunState` per pytest run lives in ``config.stash[STATE_KEY]``.

This module is plain data: no pytest hooks, no I/O.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

from .evidence import Exchange, Recorder

__all__ = [
    "CATEGORIES",
    "CheckResult",
    "Finding",
    "Leftover",
    "RunState",
    "TimingSeries",
    "percentile",
]

#: Diagnosis categories, as in DESIGN.md's code table.
CATEGORIES = ("network", "deployment", "configuration", "credentials", "security", "client", "other")


@dataclass
class Finding:
    """One diagnosis: a root cause (``primary``) or a consequence / independent finding."""

    code: str  #: e.g. SERVICE_ID_REJECTED (DESIGN.md table)
    category: str
    summary: str  #: one sentence built from the evidence
    evidence: list[str] = field(default_factory=list)  #: Exchange.summary() lines and facts
    remediation: str = ""
    primary: bool = False
    #: the code is in --hokusai-accept: a known issue, reported but not failing the verdict
    accepted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "category": self.category,
            "primary": self.primary,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "remediation": self.remediation,
            "accepted": self.accepted,
        }


@dataclass
class Leftover:
    """Something the run created on the deployment and could not remove (JSON ``leftovers``)."""

    kind: str  #: registered_model | experiment | artifact
    name: str
    why: str  #: what the removal got (redacted)
    remove: str = ""  #: how to remove it by hand

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "why": self.why, "remove": self.remove}


@dataclass
class CheckResult:
    """The outcome of one collected live check (one test item)."""

    nodeid: str
    outcome: str  #: passed | failed | skipped | error
    duration_s: float = 0.0
    markers: list[str] = field(default_factory=list)
    diagnosis: str | None = None  #: the code attached to this check's failure, if any
    message: str = ""  #: short (redacted) failure or skip reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 4),
            "markers": list(self.markers),
            "diagnosis": self.diagnosis,
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list; 0.0 for an empty one."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class TimingSeries:
    """Latency samples (milliseconds or seconds, as the name says) of one measure."""

    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def summary(self) -> dict[str, float | int | None]:
        """``{p50, p95, n}``; a measure never sampled has ``null`` percentiles (never measured is not 0)."""
        if not self.samples:
            return {"p50": None, "p95": None, "n": 0}
        return {
            "p50": round(statistics.median(self.samples), 2),
            "p95": round(percentile(self.samples, 95), 2),
            "n": len(self.samples),
        }


@dataclass
class RunState:
    """Everything the run learned; filled by the plugin's hooks and fixtures."""

    recorder: Recorder = field(default_factory=Recorder)
    checks: dict[str, CheckResult] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: named latency series: auth_validate_ms, proxy_request_ms, and per-endpoint series
    timings: dict[str, TimingSeries] = field(default_factory=dict)
    registration_s: float | None = None
    #: target block of the JSON report (mode, urls, masked key, versions)
    target: dict[str, Any] = field(default_factory=dict)
    #: what the run created and could not remove (one entry per kind and name)
    leftovers: list[Leftover] = field(default_factory=list)
    _unsent_leftovers: list[Leftover] = field(default_factory=list, repr=False, compare=False)
    #: wall-clock start and end of the run (epoch seconds; None until known), for the JSON report
    started_at: float | None = None
    finished_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def time(self, name: str, value: float) -> None:
        with self._lock:
            self.timings.setdefault(name, TimingSeries()).add(value)

    def add_leftover(self, leftover: Leftover) -> None:
        """Record a leftover; a second one of the same kind and name adds its reason to the first."""
        with self._lock:
            for known in self.leftovers:
                if (known.kind, known.name) == (leftover.kind, leftover.name):
                    if leftover.why and leftover.why not in known.why:
                        known.why = f"{known.why}; {leftover.why}" if known.why else leftover.why
                    return
            self.leftovers.append(leftover)
            self._unsent_leftovers.append(leftover)

    def drain_unsent_leftovers(self) -> list[Leftover]:
        """Leftovers recorded since the last call (a worker sends them to the controller with a report)."""
        with self._lock:
            out, self._unsent_leftovers = self._unsent_leftovers, []
            return out

    def record_check(self, result: CheckResult) -> None:
        with self._lock:
            previous = self.checks.get(result.nodeid)
            # setup error or call failure wins over a later teardown pass
            if previous is None or previous.outcome == "passed" or result.outcome in ("failed", "error"):
                if previous is not None and result.outcome == "passed":
                    return
                self.checks[result.nodeid] = result

    @property
    def live_checks(self) -> list[CheckResult]:
        return [c for c in self.checks.values() if "live" in c.markers]

    @property
    def verdict(self) -> str:
        """``pass`` only when no live check failed or errored, at least one passed, and there is
        no finding but accepted ones (``--hokusai-accept``; their checks are ``xfailed``). A run whose live checks all skipped is a ``fail``: a deploy gate must never
        pass by skipping. A check skipped for a missing optional part (the SDK) does not fail it."""
        live = self.live_checks
        if any(c.outcome in ("failed", "error") for c in live) or any(f.primary for f in self.findings
                                                                          if not f.accepted):
            return "fail"
        if any(not f.accepted for f in self.findings):  # accepted root cause, an independent finding left
            return "fail"
        return "pass" if any(c.outcome == "passed" for c in live) else "fail"

    def exchanges(self) -> list[Exchange]:
        return self.recorder.all()

    def timings_block(self) -> dict[str, Any]:
        """The ``timings`` object of the JSON report."""
        block: dict[str, Any] = {}
        for name in ("auth_validate_ms", "proxy_request_ms"):
            block[name] = self.timings.get(name, TimingSeries()).summary()
        registration = self.registration_s
        if registration is None and self.timings.get("registration_s"):
            registration = statistics.median(self.timings["registration_s"].samples)
        block["registration_s"] = round(registration, 3) if registration is not None else None  # never measured
        for name, series in sorted(self.timings.items()):
            if name not in block:
                block[name] = series.summary()
        return block
