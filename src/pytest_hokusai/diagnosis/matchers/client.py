"""The client codes: what the stock MLflow client and the hokusai SDK meet.

CLIENT_TOKEN_LOST: the MLflow client lost MLFLOW_TRACKING_TOKEN mid-run (or the SDK's local
fallback moved it away from the deployment, F15).

The SDK codes (SDK_EVENT_ROUTE_MISSING, SDK_EVENT_REJECTED, SDK_STEP_FAILED): the stock MLflow
client registers, but the hokusai SDK fails. They read what the SDK checks
(``checks/test_sdk.py``) leave: the exchange that stands for the SDK's registration-event POST
(label ``sdk:registration-event``: the SDK sends it with urllib, so the check records the
platform's answer from the SDK's result or its ``NotificationError``), and the ``sdk_failures``
fact (an SDK step that raised, with its error). These codes rank below every platform code: when
the stock client fails too, the platform's code is the root cause.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...evidence import Exchange
from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence
from .base import Match, Matcher, said

__all__ = ["EVENT_LABEL", "FACT_SDK_FAILURES", "MATCHERS", "SDK_CODES"]


def _token_lost(e: TriageEvidence) -> Match | None:
    if e.key_state != ev.KEY_PRESENT or e.facts.get(ev.FACT_TRACKING_TOKEN_PRESENT) is True:
        return None
    token_gone = e.facts.get(ev.FACT_TRACKING_TOKEN_PRESENT) is False
    lost = [x for x in e.client_exchanges() if x.status == 401 and t.KEY_REQUIRED.lower() in t.detail(x).lower()
            and (x.auth in ("", "none") or token_gone)]
    keyed = e.probe(ev.PROXY_KEY)
    moved_to = e.facts.get(ev.FACT_TRACKING_URI_MOVED_TO)
    if (not lost and not (token_gone and moved_to)) or (keyed is not None and not keyed.ok):
        return None
    fact = ["fact: MLFLOW_TRACKING_TOKEN was unset when the MLflow client failed"] if token_gone else []
    if moved_to:  # the SDK's local fallback (F15) also moved the client away from the deployment
        fact.append(f"fact: the MLflow client's tracking URI moved to {moved_to}")
    works = "works on the proxy" if keyed is not None else "is configured"
    if not lost:
        return Match(f"MLFLOW_TRACKING_TOKEN was lost and the MLflow client moved to {moved_to}, although the key "
                     f"{e.key_masked or ''} {works}: the SDK's local fallback (F15).", [*fact, keyed])
    return Match(f"The MLflow client sent {len(lost)} request(s) without a key and got 401 'API key required', "
                 f"although the key {e.key_masked or ''} {works}: MLFLOW_TRACKING_TOKEN was lost mid-run"
                 + (f" and the client moved to {moved_to}." if moved_to else "."),
                 [lost[-1], *fact, keyed])


# -- the hokusai SDK -------------------------------------------------------------------------------
#: Mirrors of :mod:`pytest_hokusai.sdk` (kept here so the diagnosis imports nothing SDK-side).
EVENT_LABEL = "sdk:registration-event"
FACT_SDK_FAILURES = "sdk_failures"
#: The SDK codes, in precedence order.
SDK_CODES = ("SDK_EVENT_ROUTE_MISSING", "SDK_EVENT_REJECTED", "SDK_STEP_FAILED")

def _events(e: TriageEvidence) -> list[Exchange]:
    return [x for x in e.exchanges if x.label == EVENT_LABEL and not x.ok]


def _stock_client_state(e: TriageEvidence) -> tuple[bool, Exchange | None]:
    """Whether the stock client registers: the triage's registered-model create (else its keyed read)."""
    for name in (ev.MODEL_CREATE, ev.PROXY_KEY):
        probe = e.probe(name)
        if probe is not None:
            return probe.ok, probe
    return True, None


def _event_route_missing(e: TriageEvidence) -> Match | None:
    bad = next((x for x in _events(e) if x.status in (404, 405)), None)
    if bad is None:
        return None
    path = t.path_of(bad.url)
    return Match(
        f"The SDK registered the model in MLflow, then its registration event POST {path} got {said(bad)}: the "
        f"API at {bad.url.split(path)[0]} does not serve the tokenized-registration-events route, so the SDK "
        "raised NotificationError and the model stays a draft on the site.",
        [bad],
        f"Deploy an API build that mounts the models router at /api/models (the route "
        f"{path}, also under /models) and let the balancer send /api/models/* to the API service; the SDK "
        "posts to HOKUSAI_API_ENDPOINT (else HOKUSAI_API_URL, else https://api.hokus.ai), so set "
        f"HOKUSAI_API_ENDPOINT={e.api_url.rstrip('/')}/api where the SDK runs.")


_EVENT_REJECTIONS: Mapping[int, tuple[str, str]] = {
    403: ("the key has no write scope for registration events",
          "Give the key a write scope (model:write or mlflow:write) in the auth service, or mint one with it."),
    422: ("the API rejects the payload the SDK built",
          ("Compare the SDK's payload with the API's schema: mlflow_run_id must be a non-empty string, so "
           "register a runs:/<run_id>/<path> model URI (the SDK takes the run id from it), and keep the SDK and "
           "the API at matching commits.")),
    400: ("the API rejects the payload the SDK built",
          "Compare the SDK's payload with the API's schema and keep the SDK and the API at matching commits."),
    502: ("the API's registration hook failed",
          ("Read the API service's log for 'Tokenized registration hook failed' and fix the hook's dependency "
           "(its webhook or queue); the event can be re-sent once it works.")),
}


def _event_rejected(e: TriageEvidence) -> Match | None:
    bad = next((x for x in _events(e) if x.status not in (404, 405)), None)
    if bad is None:
        return None
    path = t.path_of(bad.url)
    if bad.status is None:
        why, fix = ("the API did not answer it",
                    "Check that HOKUSAI_API_ENDPOINT names the API service the SDK can reach, and its health.")
    else:
        why, fix = _EVENT_REJECTIONS.get(bad.status, ("the API refused it",
                                                "Read the API service's log for the event and the answer above."))
    return Match(
        f"The SDK registered the model in MLflow, then its registration event POST {path} got {said(bad)}: "
        f"{why}; the SDK raised NotificationError and the model stays a draft on the site.", [bad], fix)


def _step_failed(e: TriageEvidence) -> Match | None:
    failures = e.facts.get(FACT_SDK_FAILURES)
    if not isinstance(failures, list) or not failures:
        return None
    registers, seen = _stock_client_state(e)
    if not registers:
        return None
    first = failures[0] if isinstance(failures[0], Mapping) else {"step": "?", "error": str(failures[0])}
    stock = "registers (the triage's registered-model create passed)" if seen is not None else "is not in question"
    lines: list[Exchange | str | None] = [f"fact: SDK step {f.get('step')} failed: {f.get('error')}"
                                          for f in failures[:3] if isinstance(f, Mapping)]
    return Match(
        f"The stock MLflow client {stock}, but the SDK failed at {first.get('step')}: {first.get('error')}.",
        [*lines, seen])


MATCHERS: dict[str, Matcher] = {
    "CLIENT_TOKEN_LOST": _token_lost,
    "SDK_EVENT_ROUTE_MISSING": _event_route_missing,
    "SDK_EVENT_REJECTED": _event_rejected,
    "SDK_STEP_FAILED": _step_failed,
}
