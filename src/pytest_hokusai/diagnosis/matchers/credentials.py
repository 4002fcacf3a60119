"""The credentials codes: the key itself is missing, malformed, refused, or lacks a right.

KEY_MISSING and KEY_MALFORMED are known before any request (nothing was sent); the others read the
direct validations and the keyed requests' answers.
"""

from __future__ import annotations

from ...evidence import Exchange
from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence
from .base import REJECTION_STATUSES, Match, Matcher, first_match, proxy_invalid_key, quoted, said, where

__all__ = ["MATCHERS"]


def _key_missing(e: TriageEvidence) -> Match | None:
    if e.key_state != ev.KEY_MISSING:
        return None
    return Match("No Hokusai API key is configured, so no request was sent.",
                 ["HOKUSAI_API_KEY is unset and no --hokusai-api-key-file was given"])


def _key_malformed(e: TriageEvidence) -> Match | None:
    if e.key_state != ev.KEY_MALFORMED:
        return None
    source = f" from {e.key_source}" if e.key_source else ""
    return Match(f"The API key {e.key_masked or ''}{source} is malformed ({e.key_problem}); it was not sent.",
                 [f"key {e.key_masked or '(masked)'}{source}: {e.key_problem}"])


def _key_rejected(e: TriageEvidence) -> Match | None:
    vals = [v[2] for v in e.validations()]
    proxy = proxy_invalid_key(e)
    masked = e.key_masked or "the key"
    if vals:
        if any(x.ok for x in vals) or not any(x.status == 401 for x in vals):
            return None
        if not all(x.status in REJECTION_STATUSES for x in vals):
            return None
        keyed = e.probe(ev.PROXY_KEY)
        if keyed is not None and keyed.ok:
            return None
        first = next((x for x in vals if x.status == 401), vals[0])
        tail = f"; the proxy answers {quoted(t.detail(proxy))}" if proxy is not None else ""
        return Match(f"The auth service rejects {masked} in every style and service_id tried "
                     f"({len(vals)} validations, e.g. {said(first)}){tail}.", [first, proxy])
    if proxy is not None:
        return Match(f"The proxy rejects {masked} with {quoted(t.detail(proxy))}, and the key could not be validated "
                     "directly to tell a wrong service_id from a bad key.", [proxy])
    return None


def _registry_admin(e: TriageEvidence) -> Match | None:
    pool = [*e.keyed_exchanges(), *[x for x in (e.probe(ev.MLFLOW_HEALTH), e.probe(ev.MLFLOW_ROOT)) if x]]
    bad = first_match(pool, lambda x: x.status == 403 and t.body_has(x, "REGISTRY_ADMIN_REQUIRED"))
    if bad is None:
        return None
    layer = "the API service" if e.is_tracking(bad) else "the MLflow admin gateway"
    reads = " (a read)" if bad.method == "GET" else ""
    return Match(f"Registry requests are refused for {e.key_masked or 'the key'}, which is not a registry admin: "
                 f"{where(bad)}{reads} -> 403 REGISTRY_ADMIN_REQUIRED from {layer}.", [bad])


def _payment(e: TriageEvidence) -> Match | None:
    bad = first_match(e.keyed_exchanges(), lambda x: x.status == 402)
    if bad is None:
        return None
    return Match(f"The platform answers 402 {quoted(t.detail(bad))} to {where(bad)} for "
                 f"{e.key_masked or 'the key'}: its account's balance or billing does not allow the call.", [bad])


def _rate_limited(e: TriageEvidence) -> Match | None:
    pool = [*e.keyed_exchanges(), *[v[2] for v in e.validations()]]
    bad = first_match(pool, lambda x: x.status == 429)
    if bad is None:
        return None
    after = t.retry_after(bad)
    wait = f" (Retry-After: {after} s)" if after else ""
    return Match(f"{where(bad)} answers 429 {quoted(t.detail(bad))}{wait}: the key {e.key_masked or ''} is "
                 "rate limited.".replace("  ", " "), [bad])


def _write_forbidden(x: Exchange) -> bool:
    return x.status == 403 and not t.body_has(x, "REGISTRY_ADMIN_REQUIRED") and t.body_has(
        x, "FORBIDDEN", "current_scopes", "write permissions")


def _write_scope(e: TriageEvidence) -> Match | None:
    bad = first_match(e.keyed_exchanges(), _write_forbidden)
    if bad is None:
        return None
    scopes = t.current_scopes(bad)
    has = f"has scopes {scopes} and " if scopes else ""
    read = e.probe(ev.PROXY_KEY)
    reads = "Reads pass but writes" if t.ok(read) else "Writes"
    return Match(f"{reads} are refused: {where(bad)} -> 403 FORBIDDEN; the key {e.key_masked or ''} {has}needs "
                 "model:write or mlflow:write.".replace("  ", " "), [read, bad],
                 "Mint a key with the model:write (or mlflow:write) scope, e.g. POST {auth}/api/v1/keys with "
                 "scopes [model:read, model:write], or add the scope to this key.".replace("{auth}", e.auth_url))


MATCHERS: dict[str, Matcher] = {
    "KEY_MISSING": _key_missing,
    "KEY_MALFORMED": _key_malformed,
    "KEY_REJECTED": _key_rejected,
    "REGISTRY_ADMIN_REQUIRED": _registry_admin,
    "PAYMENT_REQUIRED": _payment,
    "RATE_LIMITED": _rate_limited,
    "KEY_LACKS_WRITE_SCOPE": _write_scope,
}
