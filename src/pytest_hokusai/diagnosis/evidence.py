"""The triage evidence model: what the diagnosis rules read.

A :class:`TriageEvidence` holds

* the target (URLs, the plugin's configured ``service_id``) and the state of the API key
  (``missing``, ``malformed`` with the problem in words, or ``present`` with its masked form);
* the named triage probes (:data:`PROBE_NAMES`), each one recorded
  :class:`~pytest_hokusai.evidence.Exchange`, plus the probes that were skipped and why;
* the exchanges the checks themselves made (the MLflow client's are labelled ``mlflow-client``);
* facts the checks learned that are no HTTP exchange (:data:`FACT_REVOCATION_DELAY`,
  :data:`FACT_TRACKING_TOKEN_PRESENT`, :data:`FACT_LATENCY_MISSES`, ...).

It is plain data: tests build one from hand-made exchanges, :func:`~.probes.run_triage` fills one
from real probes. Nothing here makes a request or holds a raw key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..evidence import Exchange

if TYPE_CHECKING:
    from ..settings import HokusaiKeys, HokusaiSettings

__all__ = [
    "FACT_LATENCY_MISSES",
    "FACT_REVOCATION_DELAY",
    "FACT_REVOCATION_TOLERANCE",
    "FACT_REVOKED_AT",
    "FACT_TRACKING_TOKEN_PRESENT",
    "FACT_TRACKING_URI_MOVED_TO",
    "KEY_MALFORMED",
    "KEY_MISSING",
    "KEY_PRESENT",
    "MLFLOW_CLIENT_LABEL",
    "PROBE_NAMES",
    "PROBE_PREFIX",
    "TriageEvidence",
    "json_body",
    "latency_miss",
    "validate_probe_name",
]

KEY_MISSING = "missing"
KEY_MALFORMED = "malformed"
KEY_PRESENT = "present"

#: Label prefix of the triage's own exchanges in the run's recorder (``probe:proxy-key``).
PROBE_PREFIX = "probe:"
#: How an exchange's ``auth`` starts when the key was presented in a style the platform accepts.
ACCEPTED_PRESENTATIONS = ("Bearer ", "ApiKey ", "X-API-Key ", "query api_key=", "body api_key=")
#: Label of exchanges made by the stock MLflow client during the checks.
MLFLOW_CLIENT_LABEL = "mlflow-client"

# -- probe names, in the contract's triage order (section 7) -----------------------------------
API_HEALTH = "api-health"  #: GET {api}/health, also the API host's reachability probe
AUTH_HEALTH = "auth-health"  #: GET {auth}/health, also the auth host's reachability probe
MLFLOW_HEALTH = "mlflow-direct-health"  #: GET {direct_mlflow_url}/health
MLFLOW_ROOT = "mlflow-direct-root"  #: GET {direct_mlflow_url}/ (only when /health did not answer 2xx)
PROXY_NO_KEY = "proxy-no-key"  #: GET {tracking}/api/2.0/mlflow/experiments/search, no key
PROXY_KEY = "proxy-key"  #: the same with the key (Bearer)
PROXY_UNKNOWN_KEY = "proxy-unknown-key"  #: the same with a well-formed key nobody minted
PROXY_REVOKED_KEY = "proxy-revoked-key"  #: the same with HOKUSAI_REVOKED_API_KEY, if given
API_HEALTH_MLFLOW = "api-health-mlflow"  #: GET {api}/api/health/mlflow, no key (API -> MLflow leg)
EXPERIMENT_CREATE = "experiment-create"
EXPERIMENT_DELETE = "experiment-delete"
ARTIFACT_PUT = "artifact-put"
ARTIFACT_GET = "artifact-get"
ARTIFACT_DELETE = "artifact-delete"
MODEL_CREATE = "registered-model-create"
MODEL_DELETE = "registered-model-delete"

#: Validation probes are named ``validate-<style>`` (service_id omitted) or
#: ``validate-<style>:<service_id>``, style ``header`` (Bearer) or ``body`` (``api_key`` field).
VALIDATE_PREFIX = "validate-"
STYLES = ("header", "body")

PROBE_NAMES = (
    API_HEALTH, AUTH_HEALTH, MLFLOW_HEALTH, MLFLOW_ROOT, PROXY_NO_KEY, PROXY_KEY, PROXY_UNKNOWN_KEY,
    PROXY_REVOKED_KEY, "validate-<style>[:<service_id>]", API_HEALTH_MLFLOW, EXPERIMENT_CREATE,
    EXPERIMENT_DELETE, ARTIFACT_PUT, ARTIFACT_GET, ARTIFACT_DELETE, MODEL_CREATE, MODEL_DELETE,
)
#: Probes whose failure is a failure of the third-party path (not comparison or cleanup probes).
EXPECT_2XX = (API_HEALTH, AUTH_HEALTH, PROXY_KEY, EXPERIMENT_CREATE, ARTIFACT_PUT, ARTIFACT_GET, MODEL_CREATE)
#: Probes that make a write through the proxy with the key.
WRITE_PROBES = (EXPERIMENT_CREATE, ARTIFACT_PUT, MODEL_CREATE)

# -- facts the checks may add (evidence.facts[...]) ------------------------------------------
#: float: seconds after its revocation that a revoked key was still served (the edge check).
FACT_REVOCATION_DELAY = "revocation_delay_s"
#: float: how long a revoked key may keep working before it is a finding (default 0: the edge
#: check records a delay only when it exceeded what it accepts).
FACT_REVOCATION_TOLERANCE = "revocation_tolerance_s"
#: float (epoch seconds): when HOKUSAI_REVOKED_API_KEY was revoked, if known. A revoked key served
#: by the proxy within the platform's cache TTL of that moment is not a finding.
FACT_REVOKED_AT = "revoked_key_revoked_at"
#: bool: whether MLFLOW_TRACKING_TOKEN was set in the environment when the MLflow client failed.
FACT_TRACKING_TOKEN_PRESENT = "mlflow_tracking_token_present"
#: str: the tracking URI the MLflow client was moved to (the SDK's local fallback, F15), if it moved.
FACT_TRACKING_URI_MOVED_TO = "mlflow_tracking_uri_moved_to"
#: list of dicts (:func:`latency_miss`), one per performance measure that missed its budget or
#: regressed beyond the baseline factor (the perf checks add them with
#: :meth:`TriageEvidence.add_latency_miss`).
FACT_LATENCY_MISSES = "latency_misses"


def latency_miss(measure: str, *, p50: float, p95: float, n: int, nodeid: str | None = None,
                 budget: float | None = None, baseline_p50: float | None = None, factor: float | None = None,
                 phases: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One :data:`FACT_LATENCY_MISSES` entry (JSON-ready), in the measure's unit (``*_ms`` or ``*_s``).

    ``budget`` is given when the p95 exceeded it, ``baseline_p50`` and ``factor`` when the p50
    regressed beyond ``factor`` times the baseline's; ``phases`` splits a registration's time by step.

    >>> latency_miss("auth_validate_ms", p50=2010.0, p95=2100.0, n=20, budget=1000.0)["unit"]
    'ms'
    """
    unit = "ms" if measure.endswith("_ms") else "s" if measure.endswith("_s") else ""
    miss: dict[str, Any] = {"measure": measure, "unit": unit, "p50": float(p50), "p95": float(p95), "n": int(n),
                            "nodeid": nodeid, "budget": None if budget is None else float(budget),
                            "baseline_p50": None if baseline_p50 is None else float(baseline_p50),
                            "factor": None if factor is None else float(factor)}
    if phases:
        miss["phases"] = {str(k): float(v) for k, v in phases.items()}
    return miss


def validate_probe_name(style: str, service_id: str | None) -> str:
    """``validate-header`` (service_id omitted) or ``validate-body:platform``."""
    return f"{VALIDATE_PREFIX}{style}" + ("" if service_id is None else f":{service_id}")


def json_body(exchange: Exchange | None) -> Any:
    """The exchange's body excerpt parsed as JSON, or ``None`` (not JSON, or cut short)."""
    if exchange is None or not exchange.body_excerpt:
        return None
    text = exchange.body_excerpt.strip()
    if text[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def host_of(url: str) -> str:
    """``host:port`` of a URL (the unit of reachability)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return parts.netloc.rsplit("@", 1)[-1] or url


@dataclass
class TriageEvidence:
    """Everything the triage and the checks saw, for the diagnosis rules (see the module docstring).

    >>> ev = TriageEvidence(api_url="https://registry.hokus.ai")
    >>> ev.add_probe("api-health", Exchange("GET", "https://registry.hokus.ai/health", status=200))
    >>> ev.probe("api-health").status
    200
    """

    api_url: str = ""
    auth_url: str = ""
    tracking_uri: str = ""
    direct_mlflow_url: str = ""
    service_id: str = "platform"  #: the service_id the plugin validates with (its setting)
    key_state: str = KEY_PRESENT  #: missing | malformed | present
    key_problem: str | None = None  #: why the key is malformed, in words (never the key)
    key_masked: str | None = None  #: e.g. ``hk_live_…wxyz``
    key_source: str | None = None  #: e.g. ``env HOKUSAI_API_KEY``
    revoked_key_masked: str | None = None
    probes: dict[str, Exchange] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  #: probe name -> why it was not sent
    exchanges: list[Exchange] = field(default_factory=list)  #: made by the checks themselves
    facts: dict[str, Any] = field(default_factory=dict)
    failed_checks: dict[str, str] = field(default_factory=dict)  #: nodeid -> short failure message
    elapsed_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: HokusaiSettings, keys: HokusaiKeys) -> TriageEvidence:
        """Evidence with the target and key state filled in, and no exchange yet."""
        evidence = cls(
            api_url=settings.api_url, auth_url=settings.auth_url, tracking_uri=settings.tracking_uri,
            direct_mlflow_url=settings.direct_mlflow_url, service_id=settings.service_id,
        )
        key = keys.primary
        if key is None or not key:
            evidence.key_state = KEY_MISSING
        else:
            evidence.key_masked = key.masked
            evidence.key_source = key.source
            problem = key.format_problem()
            if problem:
                evidence.key_state, evidence.key_problem = KEY_MALFORMED, problem
        if keys.revoked:
            evidence.revoked_key_masked = keys.revoked.masked
        return evidence

    # -- building ---------------------------------------------------------------------------
    def add_probe(self, name: str, exchange: Exchange) -> None:
        """Record the exchange of the named probe (labelled ``probe:<name>`` if it has no label)."""
        if exchange.label is None:
            exchange.label = PROBE_PREFIX + name
        self.probes[name] = exchange

    def add_exchanges(self, exchanges: Iterable[Exchange]) -> None:
        """Add exchanges the checks made (the triage's own ``probe:`` ones are left out)."""
        self.exchanges.extend(e for e in exchanges if not (e.label or "").startswith(PROBE_PREFIX))

    def add_fact(self, name: str, value: Any) -> None:
        """Add a fact a check learned, e.g. ``add_fact(FACT_REVOCATION_DELAY, 75.0)``."""
        self.facts[name] = value

    def add_latency_miss(self, miss: Mapping[str, Any]) -> None:
        """Append a :func:`latency_miss` entry to the :data:`FACT_LATENCY_MISSES` fact."""
        self.add_fact(FACT_LATENCY_MISSES, [*self.latency_misses(), dict(miss)])

    def add_failed_check(self, nodeid: str, message: str = "") -> None:
        self.failed_checks[nodeid] = message

    # -- reading ----------------------------------------------------------------------------
    def probe(self, name: str) -> Exchange | None:
        return self.probes.get(name)

    def latency_misses(self) -> list[dict[str, Any]]:
        """The :data:`FACT_LATENCY_MISSES` entries that name a measure and numbers (others are ignored)."""
        value = self.facts.get(FACT_LATENCY_MISSES)
        if not isinstance(value, (list, tuple)):
            return []
        return [dict(m) for m in value if isinstance(m, Mapping) and isinstance(m.get("measure"), str)
                and all(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool) for k in ("p50", "p95"))]

    def validations(self) -> Iterator[tuple[str, str | None, Exchange]]:
        """``(style, service_id or None, exchange)`` of every validation probe that was sent."""
        for name, exchange in self.probes.items():
            if not name.startswith(VALIDATE_PREFIX):
                continue
            style, _, sid = name[len(VALIDATE_PREFIX):].partition(":")
            yield style, (sid or None), exchange

    def all_exchanges(self) -> list[Exchange]:
        """Probe exchanges first, then the checks' own."""
        return [*self.probes.values(), *self.exchanges]

    def uses_key(self, exchange: Exchange) -> bool:
        """Whether the exchange presented the run's primary key (by its masked form) in a way the
        platform accepts (Bearer, ApiKey, X-API-Key, ``?api_key=``, body ``api_key``).

        A check that sends the key the wrong way on purpose (``bearer``, ``Basic``, raw) expects a
        401, so such exchanges are not read as faults.
        """
        if not exchange.auth.startswith(ACCEPTED_PRESENTATIONS):
            return False
        return self.key_masked in exchange.auth if self.key_masked else True

    def keyed_exchanges(self) -> list[Exchange]:
        """Exchanges made with the primary key: the key probes and the checks' keyed requests.

        The checks' deliberate negative requests (no key, the read-only or revoked key, an unknown
        key) are left out, so an expected 401/403 in an edge check is not read as a fault.
        """
        keyed = [self.probes[n] for n in self.probes if n in (PROXY_KEY, *WRITE_PROBES, ARTIFACT_GET)]
        keyed += [e for e in self.exchanges if self.uses_key(e)]
        return keyed

    def is_tracking(self, exchange: Exchange) -> bool:
        """Whether the exchange went to the MLflow REST API under the tracking URI, the paths the stock
        client uses (``{tracking}/api/2.0/...``); exploratory paths such as ``ajax-api`` are not."""
        return bool(self.tracking_uri) and exchange.url.startswith(self.tracking_uri.rstrip("/") + "/api/2.0/")

    def client_exchanges(self) -> list[Exchange]:
        return [e for e in self.exchanges if (e.label or "").startswith(MLFLOW_CLIENT_LABEL)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (exchanges as dicts; nothing secret in it)."""
        return {
            "target": {"api_url": self.api_url, "auth_url": self.auth_url, "tracking_uri": self.tracking_uri,
                       "direct_mlflow_url": self.direct_mlflow_url, "service_id": self.service_id},
            "key": {"state": self.key_state, "problem": self.key_problem, "masked": self.key_masked,
                    "source": self.key_source},
            "probes": {name: ex.to_dict() for name, ex in self.probes.items()},
            "skipped": dict(self.skipped),
            "exchanges": len(self.exchanges),
            "facts": dict(self.facts),
            "failed_checks": dict(self.failed_checks),
            "elapsed_s": round(self.elapsed_s, 3),
        }
