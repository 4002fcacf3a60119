"""The triage: a bounded series of probes, in the contract's triage order (section 7), whose
answers become a :class:`~.evidence.TriageEvidence` for the rules.

Order: reachability + health of the API and auth hosts (``GET /health`` of each *is* the
reachability probe: its failure class tells DNS, refused, TLS or timeout), direct MLflow health,
the proxy without a key, with the key, with an unknown well-formed key (and with the revoked key
if one is given), direct validation in header and body style with service_id omitted,
``platform`` and the configured one, the API's ``/api/health/mlflow``, then a write, an artifact
PUT/GET and a registered-model create through the proxy (each cleaned up after).

Bounded: every probe has a short timeout (``min(settings.timeout, 3 s)``), a host that did not
answer is not asked again, the writes are skipped when the keyed read failed, and nothing is sent
once ``budget_s`` is spent. With no key, or a malformed one, nothing is sent at all.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..evidence import Exchange
from ..secret import Secret
from . import evidence as ev
from .evidence import KEY_PRESENT, PROBE_PREFIX, TriageEvidence, host_of, validate_probe_name

if TYPE_CHECKING:
    from ..http import HokusaiSession, ProbeResult
    from ..settings import HokusaiKeys, HokusaiSettings

__all__ = ["PROBE_TIMEOUT_S", "SEARCH_PATH", "SessionFactory", "make_unknown_key", "run_triage"]

#: The longest any one triage probe may wait.
PROBE_TIMEOUT_S = 3.0
#: Do not start a probe with less than this left of the budget.
MIN_PROBE_S = 0.25
SEARCH_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
MLFLOW_API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts/hokusai-triage"
ARTIFACT_BYTES = b"hokusai triage probe\n"
#: The registered model the triage's write probe creates and deletes (pytest_hokusai.canary).
TRIAGE_MODEL = "hokusai-canary-triage"
#: Failure classes after which a host is not asked again.
_NO_ANSWER = ("dns", "refused", "tls", "connection", "timeout", "invalid-url")

#: Builds the session the probes use; called as ``session_factory(timeout=..., key=None)``, i.e.
#: with :class:`~pytest_hokusai.http.HokusaiSession`'s keyword arguments (the caller adds its recorder).
SessionFactory = Callable[..., "HokusaiSession"]


def make_unknown_key() -> Secret:
    """A well-formed key nobody minted (``hk_live_`` + 32 random alphanumerics), made at run time."""
    alphabet = string.ascii_letters + string.digits
    return Secret("hk_live_" + "".join(secrets.choice(alphabet) for _ in range(32)), source="triage (unknown key)")


class _Runner:
    """Sends probes while the budget lasts and remembers hosts that did not answer."""

    def __init__(self, session: HokusaiSession, evidence: TriageEvidence, *, deadline: float,
                 per_probe: float) -> None:
        self.session = session
        self.evidence = evidence
        self.deadline = deadline
        self.per_probe = per_probe
        self.blocked: dict[str, str] = {}  # host -> why it is not asked again
        self.silent: dict[str, Exchange] = {}  # host -> a check's timed-out exchange (run_triage)

    def timeout_for(self, name: str, url: str) -> float | None:
        """The timeout for this probe, or ``None`` (and the reason noted) when it must be skipped."""
        host = host_of(url)
        silent = self.silent.get(host)
        if silent is not None:  # it already gave no answer within the budget: that is this probe's answer
            self.evidence.add_probe(name, silent)
            return None
        if host in self.blocked:
            self.evidence.skipped[name] = self.blocked[host]
            return None
        remaining = self.deadline - time.monotonic()
        if remaining < MIN_PROBE_S:
            self.evidence.skipped[name] = "the triage time budget was spent"
            return None
        return min(self.per_probe, remaining)

    def note(self, name: str, url: str, exchange: Exchange, timeout: float | None = None) -> None:
        if exchange.error == "timeout" and timeout is not None and timeout < self.per_probe:
            # the budget, not the host, cut it short: no evidence either way
            self.evidence.skipped[name] = f"cut short by the triage time budget ({timeout:.1f} s left)"
            return
        self.evidence.add_probe(name, exchange)
        if exchange.status is None and exchange.error in _NO_ANSWER:
            host = host_of(url)
            self.blocked.setdefault(host, f"{host} did not answer {name} ({exchange.error})")

    def send(self, name: str, method: str, url: str, *, key: Secret | None = None,
             json: Any = None, **kwargs: Any) -> ProbeResult | None:
        timeout = self.timeout_for(name, url)
        if timeout is None:
            return None
        result = self.session.probe(method, url, label=PROBE_PREFIX + name, key=key, json=json,
                                    timeout=timeout, **kwargs)
        self.note(name, url, result.exchange, timeout)
        return result


def _ok(result: ProbeResult | None) -> bool:
    return result is not None and result.exchange.ok


def run_triage(
    settings: HokusaiSettings,
    keys: HokusaiKeys,
    session_factory: SessionFactory,
    *,
    budget_s: float = 10.0,
    silent: Mapping[str, Exchange] | None = None,
) -> TriageEvidence:
    """Probe the target in triage order and return the evidence (see the module docstring).

    ``session_factory(timeout=..., key=None)`` must return a
    :class:`~pytest_hokusai.http.HokusaiSession` (or anything with its ``probe`` method). Never
    raises for network errors; takes at most about ``budget_s`` seconds.

    ``silent`` maps ``host:port`` to a check's exchange that already timed out on that host within
    the connect/first-byte budget: it stands as the answer of every probe to that host (which is
    not asked again), so a host that never answers costs one budget, not two.
    """
    started = time.monotonic()
    evidence = TriageEvidence.from_settings(settings, keys)
    if evidence.key_state != KEY_PRESENT or keys.primary is None:
        return evidence  # KEY_MISSING / KEY_MALFORMED: reported before any request
    key = keys.primary
    per_probe = max(MIN_PROBE_S, min(settings.timeout, PROBE_TIMEOUT_S))
    session = session_factory(timeout=per_probe, key=None)
    runner = _Runner(session, evidence, deadline=started + budget_s, per_probe=per_probe)
    runner.silent = dict(silent or {})
    try:
        _probe_all(runner, settings, keys, key)
    finally:
        close = getattr(session, "close", None)
        if callable(close):
            close()
        evidence.elapsed_s = time.monotonic() - started
    return evidence


def _probe_all(run: _Runner, settings: HokusaiSettings, keys: HokusaiKeys, key: Secret) -> None:
    api, auth = settings.api_url.rstrip("/"), settings.auth_url.rstrip("/")
    tracking, direct = settings.tracking_uri.rstrip("/"), settings.direct_mlflow_url.rstrip("/")
    # 1-2. reachability and health of each host; MLflow straight behind the balancer
    run.send(ev.API_HEALTH, "GET", api + "/health")
    run.send(ev.AUTH_HEALTH, "GET", auth + "/health")
    if not _ok(run.send(ev.MLFLOW_HEALTH, "GET", direct + "/health")):
        run.send(ev.MLFLOW_ROOT, "GET", direct + "/")
    # 3-4. the proxy: no key (expect 401 'API key required'), the key, an unknown key, the revoked key
    search = tracking + SEARCH_PATH
    run.send(ev.PROXY_NO_KEY, "GET", search, key=None)
    keyed = run.send(ev.PROXY_KEY, "GET", search, key=key)
    run.send(ev.PROXY_UNKNOWN_KEY, "GET", search, key=make_unknown_key())
    if keys.revoked:
        run.send(ev.PROXY_REVOKED_KEY, "GET", search, key=keys.revoked)
    # 5. direct validation, both styles, service_id omitted / platform / the configured one
    _validations(run, auth, key, settings.service_id)
    # 6. the API -> MLflow leg, as the API itself sees it
    run.send(ev.API_HEALTH_MLFLOW, "GET", api + "/api/health/mlflow", key=None)
    # 7-9. writes, only when the keyed read worked (otherwise they fail the same way)
    if not _ok(keyed):
        reason = "the keyed read through the proxy failed, so writes would fail the same way"
        for name in ev.WRITE_PROBES:
            run.evidence.skipped.setdefault(name, reason)
        return
    token = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:10]}"
    _write_probes(run, tracking, key, token)


def _validations(run: _Runner, auth: str, key: Secret, configured: str) -> None:
    from ..auth import AuthClient

    client = AuthClient(auth, run.session, service_id=None)
    service_ids: list[str | None] = list(dict.fromkeys([None, "platform", configured]))
    for sid in service_ids:
        for style in ev.STYLES:
            name = validate_probe_name(style, sid)
            timeout = run.timeout_for(name, client.validate_url)
            if timeout is None:
                continue
            outcome = client.validate(key, style="header" if style == "header" else "body", service_id=sid,
                                      timeout=timeout, label=PROBE_PREFIX + name)
            run.note(name, client.validate_url, outcome.exchange, timeout)


def _write_probes(run: _Runner, tracking: str, key: Secret, token: str) -> None:
    rest = tracking + MLFLOW_API
    created = run.send(ev.EXPERIMENT_CREATE, "POST", rest + "/experiments/create", key=key,
                       json={"name": f"hokusai-triage-{token}"})
    experiment_id = None
    if created is not None and created.exchange.ok and isinstance(created.json, dict):
        experiment_id = created.json.get("experiment_id")
    if experiment_id:
        run.send(ev.EXPERIMENT_DELETE, "POST", rest + "/experiments/delete", key=key,
                 json={"experiment_id": str(experiment_id)})
    artifact = f"{tracking}{ARTIFACTS_API}/{token}.txt"
    put = run.send(ev.ARTIFACT_PUT, "PUT", artifact, key=key, data=ARTIFACT_BYTES,
                   headers={"Content-Type": "text/plain"})
    if _ok(put):
        run.send(ev.ARTIFACT_GET, "GET", artifact, key=key)
        run.send(ev.ARTIFACT_DELETE, "DELETE", artifact, key=key)
    elif put is not None:
        run.evidence.skipped[ev.ARTIFACT_GET] = "the artifact PUT failed"
    # The triage's canary model (pytest_hokusai.canary): broken deletes leave this one name behind.
    model = TRIAGE_MODEL
    created = run.send(ev.MODEL_CREATE, "POST", rest + "/registered-models/create", key=key, json={"name": model})
    if created is not None and created.exchange.status == 400 and "RESOURCE_ALREADY_EXISTS" in (
            created.exchange.body_excerpt or ""):
        # left by an earlier run (or another xdist worker's triage): the write reached MLflow all the
        # same; a PATCH update is the registry write this probe stands for (PATCH bodies always go through)
        created = run.send(ev.MODEL_CREATE, "PATCH", rest + "/registered-models/update", key=key,
                           json={"name": model, "description": f"pytest-hokusai triage canary {token}"})
    if _ok(created):
        run.send(ev.MODEL_DELETE, "DELETE", rest + "/registered-models/delete", key=key, json={"name": model})
