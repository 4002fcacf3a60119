"""The LATENCY_BUDGET_EXCEEDED matcher: performance-only failures, from the perf checks' facts.

The perf checks (``checks/test_perf.py``) add one :func:`~.evidence.latency_miss` entry to the
:data:`~.evidence.FACT_LATENCY_MISSES` fact for every measure that missed its budget or regressed
beyond the baseline factor. This matcher names each measure with its p50 / p95 and the budget or
baseline it missed, and says where the time goes for that measure (contract F23: latency in steps
of about 2 s is the API's Redis validation cache timing out). The rule ranks last in
:data:`~.rules.PRECEDENCE`: any functional finding stays the root cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import evidence as ev
from ..evidence import TriageEvidence
from .base import Match

__all__ = ["LATENCY_CODE", "MEASURES", "REDIS_STEP_MS", "describe_miss", "match_latency", "redis_steps"]

LATENCY_CODE = "LATENCY_BUDGET_EXCEEDED"

#: measure -> (what it is, in words; where its time goes).
MEASURES: dict[str, tuple[str, str]] = {
    "auth_validate_ms": ("key validation", (
        "Key validation is slow: look at the auth service (POST {auth}/api/v1/keys/validate: its database, "
        "CPU, task count) and at the API's Redis validation cache ({api}/health?detailed=true reports redis); "
        "latency in steps of about 2 s means Redis timeouts (contract F23: a security group blocking Redis, "
        "a bare-hostname REDIS_URL).")),
    "proxy_request_ms": ("proxied MLflow requests", (
        "Proxied requests are slow: compare {api}/health (the API service alone) with direct MLflow "
        "({mlflow}/health) to tell the API service (CPU, workers, key validation on every request without "
        "its Redis cache) from the MLflow upstream (its backend database, workers) or the network between.")),
    "registration_s": ("full registration", (
        "Registration is slow: look at the MLflow server (its backend database, workers) for the experiment, "
        "run and register steps, and at the artifact store (upload bandwidth, bucket region) for log_model "
        "and load; the phases in the summary show which step takes the time.")),
}

#: The step of the API's Redis timeouts (contract F23): latency in multiples of about 2 s.
REDIS_STEP_MS = 2000.0
_REDIS_SLACK_MS = 400.0


def _ms(miss: Mapping[str, Any], value: float) -> float:
    return value * 1000.0 if miss.get("unit") == "s" else value


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        if value >= 10:
            return f"{value:.0f} ms"
        return f"{value:.1f} ms" if value >= 1 else f"{value:.3g} ms"
    if unit == "s":
        return f"{value:.1f} s" if value >= 1 else f"{value:.3g} s"
    return f"{value:g}"


def redis_steps(miss: Mapping[str, Any]) -> int:
    """How many ~2 s Redis timeouts the p50 looks like (0: not that pattern). Only request latencies
    (``*_ms``) are read; a registration adds many requests up."""
    if miss.get("unit") != "ms":
        return 0
    p50 = _ms(miss, float(miss["p50"]))
    steps = round(p50 / REDIS_STEP_MS)
    return steps if steps >= 1 and abs(p50 - steps * REDIS_STEP_MS) <= _REDIS_SLACK_MS else 0


def describe_miss(miss: Mapping[str, Any]) -> str:
    """``key validation (auth_validate_ms) p95 2.1 s over the 1000 ms budget (p50 2010 ms, n=20)``."""
    measure, unit = str(miss["measure"]), str(miss.get("unit") or "")
    what = MEASURES.get(measure, (measure.replace("_", " "), ""))[0]
    p50, p95, n = float(miss["p50"]), float(miss["p95"]), int(miss.get("n") or 0)
    stats = f"p50 {_fmt(p50, unit)}, p95 {_fmt(p95, unit)}" if n != 1 else f"{_fmt(p50, unit)} (one run)"
    parts: list[str] = []
    budget = miss.get("budget")
    if isinstance(budget, (int, float)):
        parts.append(f"over the {_fmt(float(budget), unit)} budget")
    before, factor = miss.get("baseline_p50"), miss.get("factor")
    if isinstance(before, (int, float)) and before > 0:
        allowed = f", allowed {float(factor):g}x" if isinstance(factor, (int, float)) else ""
        parts.append(f"p50 {p50 / float(before):.1f}x the baseline's {_fmt(float(before), unit)}{allowed}")
    count = f", n={n}" if n > 1 else ""
    phases = miss.get("phases")
    split = ""
    if isinstance(phases, Mapping) and phases:
        split = "; phases: " + ", ".join(f"{k} {float(v):.1f} s" for k, v in phases.items())
    return f"{what} ({measure}) {stats}{count}: {' and '.join(parts) or 'missed its target'}{split}"


def _evidence_line(miss: Mapping[str, Any]) -> str:
    check = f" [check {miss['nodeid']}]" if miss.get("nodeid") else ""
    return f"fact: {ev.FACT_LATENCY_MISSES}: {describe_miss(miss)}{check}"


def _remediation(e: TriageEvidence, misses: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for miss in misses:
        steps = redis_steps(miss)
        if steps:
            what = MEASURES.get(str(miss["measure"]), (str(miss["measure"]),))[0]
            about = "2 s" if steps == 1 else f"{steps} x 2 s"
            out.append(f"The {what} p50 is about {about}, the step of a Redis timeout (F23): check that the "
                       "API service reaches its Redis validation cache (security group, REDIS_URL).")
        advice = MEASURES.get(str(miss["measure"]), ("", ""))[1]
        if advice:
            out.append(advice.format(api=e.api_url or "{api}", auth=e.auth_url or "{auth}",
                                     mlflow=e.direct_mlflow_url or "{mlflow}"))
    out.append("If the platform is healthy and the budget is too tight for this link, raise the "
               "--hokusai-budget-* setting (or refresh --hokusai-baseline).")
    return " ".join(dict.fromkeys(out))


def match_latency(e: TriageEvidence) -> Match | None:
    """LATENCY_BUDGET_EXCEEDED when a perf check recorded a missed budget or a baseline regression."""
    misses = e.latency_misses()
    if not misses:
        return None
    head = "A performance budget was missed" if len(misses) == 1 else f"{len(misses)} performance targets were missed"
    summary = f"{head}: " + "; ".join(describe_miss(m) for m in misses) + "."
    return Match(summary, [_evidence_line(m) for m in misses], _remediation(e, misses))
