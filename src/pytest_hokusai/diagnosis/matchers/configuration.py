"""The configuration codes: the parts run, but one is set up against another.

A wrong service_id, two sides of the key-validation contract that disagree, a key not forwarded,
MLflow's Host check, artifact serving switched off, and a URL setting that points at something
other than the Hokusai API (a website, a catch-all, another service's JSON).
"""

from __future__ import annotations

from ...evidence import Exchange
from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence, host_of, json_body
from .base import (
    REJECTION_STATUSES,
    Match,
    Matcher,
    first_match,
    keyed_tracking,
    proxy_auth_failure,
    proxy_invalid_key,
    quoted,
    said,
    settings_of,
    validations,
    where,
)

__all__ = ["MATCHERS"]


def _registered_service(e: TriageEvidence) -> str | None:
    from ...auth import parse_registered_service

    for _, _, ex in e.validations():
        if ex.ok and t.service_id_of(ex):
            return t.service_id_of(ex)
    for _, _, ex in e.validations():
        data = json_body(ex)
        found = parse_registered_service(data.get("detail") if isinstance(data, dict) else ex.body_excerpt)
        if found:
            return found
    return None


def _sid(sid: str | None) -> str:
    return "service_id omitted" if sid is None else f"service_id {sid!r}"


def _service_id_rejected(e: TriageEvidence) -> Match | None:
    vals = list(e.validations())
    registered = _registered_service(e)
    reg = f"'{registered}'" if registered else "its registered service"
    proxy = proxy_invalid_key(e)
    configured = [v for v in vals if v[1] == e.service_id]
    accepted = [v for v in vals if v[2].ok and v[1] != e.service_id]
    if configured and accepted and all(v[2].status == 401 for v in configured):
        ok_sids = ", ".join(dict.fromkeys(_sid(v[1]) for v in accepted))
        also = f"; the proxy rejects it too ({quoted(t.detail(proxy))})" if proxy is not None else ""
        return Match(
            f"The key is registered for {reg}: it validates with {ok_sids} but is rejected with "
            f"service_id {e.service_id!r}, the one in use{also}.",
            [accepted[0][2], configured[0][2], proxy],
            f"Use service_id {registered or 'platform'!r}: set --hokusai-service-id / HOKUSAI_SERVICE_ID, and "
            f"AUTH_SERVICE_ID on the API service (HOKUSAI_AUTH_SERVICE_ID on the MLflow admin gateway) if they "
            f"use {e.service_id!r} too; or mint a key for {e.service_id!r} (valid: website, prediction, platform).")
    header_ok = [v for v in vals if v[0] == "header" and v[2].ok and v[1] in (None, e.service_id)]
    if proxy is not None and header_ok:
        sid = header_ok[-1][1]
        return Match(
            f"The key validates directly (header style, {_sid(sid)}, registered for {reg}) but the proxy "
            f"rejects it with {quoted(t.detail(proxy))}: the API service validates with another service_id "
            f"than {reg}.",
            [header_ok[-1][2], proxy],
            f"Set AUTH_SERVICE_ID={registered or 'platform'} on the API service and "
            f"HOKUSAI_AUTH_SERVICE_ID={registered or 'platform'} on the MLflow admin gateway, then redeploy "
            "(the auth service accepts only website, prediction and platform). If the key has allowed_ips, "
            "check the client_ip the proxy forwards.")
    return None


def _contract_mismatch(e: TriageEvidence) -> Match | None:
    header, body = validations(e, "header"), validations(e, "body")
    if not header or not body or any(v[2].ok for v in header) or not any(v[2].ok for v in body):
        return None
    if not all(v[2].status in REJECTION_STATUSES for v in header):
        return None
    proxy = proxy_invalid_key(e) or proxy_auth_failure(e)
    if proxy is None:
        return None
    h, b = header[0], next(v for v in body if v[2].ok)
    return Match(
        f"The auth service accepts the key only in body style ({{\"api_key\": ...}}, {_sid(b[1])}); as a Bearer "
        f"header it answers {said(h[2])}, and the proxy, which sends the header, gets {quoted(t.detail(proxy))}.",
        [b[2], h[2], proxy],
        "Make POST /api/v1/keys/validate accept 'Authorization: Bearer <key>' (as the real auth service does), "
        "or make the API middleware send the key as body api_key; both sides must use one style.")


def _strips_auth(e: TriageEvidence) -> Match | None:
    bad = next((x for x in keyed_tracking(e) if x.status == 401 and t.KEY_REQUIRED.lower() in t.detail(x).lower()),
               None)
    if bad is None:
        return None
    seen: list[Exchange] = [bad]
    leg = e.probe(ev.API_HEALTH_MLFLOW)
    if leg is not None and t.body_has(leg, t.KEY_REQUIRED):
        seen.append(leg)
    if bad.auth.startswith("query"):
        return Match(f"The key was sent as ?api_key= and accepted by the proxy, but the layer behind it answered "
                     f"{said(bad)} to {where(bad)}: the MLflow gateway does not read the query parameter.",
                     seen, "Send the key as 'Authorization: Bearer <key>'; or forward it as a header from the "
                     "API proxy.")
    return Match(f"The request carried the key ({bad.auth}) but {where(bad)} got {said(bad)}: the proxy does "
                 "not forward it to the layer behind.", seen)


def _host_header(e: TriageEvidence) -> Match | None:
    bad = next((x for x in e.all_exchanges() if x.status == 403 and t.body_has(x, "Invalid Host header")), None)
    if bad is None:
        return None
    via = "through the proxy" if e.is_tracking(bad) else "directly"
    return Match(f"MLflow rejects the Host header it receives ({via}): {where(bad)} -> 403 text/plain "
                 f"{quoted(t.detail(bad, 80))}.", [bad])


def _artifacts(e: TriageEvidence) -> Match | None:
    tracked = keyed_tracking(e)
    artifacts = [x for x in tracked if t.is_artifact(x)]
    meta_ok = any(x.ok for x in tracked if not t.is_artifact(x))
    disabled = first_match(artifacts, lambda x: t.body_has(x, "ARTIFACTS_DISABLED"))
    if disabled is not None:
        return Match(f"Artifact calls are refused by the proxy: {where(disabled)} -> {said(disabled)} "
                     "(artifact serving is off in the API service).", [disabled],
                     "Set MLFLOW_SERVE_ARTIFACTS=true on the API service (its MLflow proxy refuses mlflow-artifacts "
                     "paths otherwise) and redeploy.")
    if not meta_ok:
        return None
    # MLflow 3.x answers 503 '--no-serve-artifacts' when serving is off; a 404 there is the untranslated
    # artifact path (MLFLOW_PATH_MISMATCH), not serving switched off.
    missing = first_match(artifacts, lambda x: x.status == 503 and t.body_has(x, "serve-artifacts", "serve_artifacts"))
    if missing is not None:
        return Match(f"Experiments and models work but artifact serving is off in MLflow: {where(missing)} -> "
                     f"{said(missing)}.",
                     [missing],
                     "Start MLflow with --serve-artifacts (and --artifacts-destination) and redeploy it.")
    broken = first_match(artifacts, lambda x: x.method == "PUT" and (x.status or 0) >= 500)
    if broken is not None:
        return Match(f"Artifact uploads fail in MLflow's artifact store: {where(broken)} -> {said(broken)}.",
                     [broken],
                     "Give the MLflow service write access to its artifact store (s3:PutObject, s3:ListBucket "
                     "on the bucket of --artifacts-destination) and check MLflow's log for the error.")
    return None


#: probe -> what the Hokusai API or MLflow would have answered there
_EXPECTED = {
    ev.API_HEALTH: "api-health",
    ev.PROXY_NO_KEY: "mlflow-search",
    ev.PROXY_KEY: "mlflow-search",
    ev.PROXY_UNKNOWN_KEY: "mlflow-search",
    ev.AUTH_HEALTH: "auth",
}


def _not_hokusai(e: TriageEvidence) -> Match | None:
    foreign: list[tuple[str, Exchange]] = []
    for name, expect in _EXPECTED.items():
        ex = e.probe(name)
        if ex is not None and t.foreign_answer(ex, expect=expect):
            foreign.append((name, ex))
    for _, _, ex in e.validations():
        if t.foreign_answer(ex, expect="auth"):
            foreign.append(("validate", ex))
            break
    if not foreign:
        return None
    hosts: dict[str, list[Exchange]] = {}
    for _, ex in foreign:
        hosts.setdefault(host_of(ex.url), []).append(ex)
    parts, fixes = [], []
    for host, exs in hosts.items():
        settings = settings_of(e, host) or [host]
        shown = "; ".join(f"{where(x)} -> {t.what_answered(x)}" for x in exs[:2])
        parts.append(f"{', '.join('--hokusai-' + s for s in settings)} ({host}) answers like a website or another "
                     f"service: {shown}")
        if "auth-url" in settings and len(settings) == 1:
            fixes.append("point --hokusai-auth-url at the auth service (GET /health answers JSON, POST "
                         "/api/v1/keys/validate answers 200 or 401 JSON)")
        else:
            fixes.append(f"point {' / '.join('--hokusai-' + s for s in settings)} at the Hokusai API service "
                         "(GET /health answers JSON with 'status'; {api}/api/mlflow/api/2.0/mlflow/experiments/search "
                         "answers 401 'API key required' without a key)")
    summary = ("Not the Hokusai API: " + "; ".join(parts)
               + ". A wrong URL, not a security finding: nothing there is MLflow.")
    return Match(summary, [x for _, x in foreign[:4]],
                 "Check the URL settings and where they come from (command line, HOKUSAI_* env, ini): "
                 + "; ".join(fixes) + ".")


MATCHERS: dict[str, Matcher] = {
    "SERVICE_ID_REJECTED": _service_id_rejected,
    "AUTH_CONTRACT_MISMATCH": _contract_mismatch,
    "PROXY_STRIPS_AUTH": _strips_auth,
    "HOST_HEADER_REJECTED": _host_header,
    "ARTIFACTS_DISABLED": _artifacts,
    "NOT_HOKUSAI_API": _not_hokusai,
}
