"""The matchers behind :data:`~.rules.RULES`: one function per diagnosis code.

Each reads a :class:`~.evidence.TriageEvidence` and, when its tell (DESIGN.md's table, contract
section 7) is there, returns a :class:`Match`: a one-sentence summary built from what was seen, the
decisive exchanges, and a remediation naming what to change where (empty: the code's generic fix).
Tells in the checks' own exchanges count only for requests made with the primary key, presented in
an accepted style, to the MLflow REST API under the tracking URI, so a check's deliberate negative
request (no key, another key, the key sent wrongly, an exploratory path) is never read as a fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..evidence import Exchange
from . import evidence as ev
from . import tells as t
from .evidence import TriageEvidence, host_of, json_body

__all__ = ["MATCHERS", "REVOCATION_GRACE_S", "Match", "Matcher", "said", "where"]


@dataclass
class Match:
    """What a matcher found: a one-sentence summary, the evidence, and a specific remediation."""

    summary: str
    evidence: Sequence[Exchange | str | None] = ()  #: ``None`` items are dropped
    remediation: str = ""  #: empty: the rule's generic fix


Matcher = Callable[[TriageEvidence], "Match | None"]


MATCHERS: dict[str, Matcher] = {}


def _rule(code: str) -> Callable[[Matcher], Matcher]:
    def register(fn: Matcher) -> Matcher:
        MATCHERS[code] = fn
        return fn
    return register


def _q(text: str) -> str:
    return f"'{text}'" if text else "an empty body"


def said(ex: Exchange) -> str:
    """``404 'Not Found'`` / ``refused``: what an exchange got, short."""
    if ex.status is None:
        return ex.error or "no answer"
    return f"{ex.status} {_q(t.detail(ex, 100))}"


def where(ex: Exchange) -> str:
    """``GET /api/mlflow/api/2.0/mlflow/experiments/search``: method and path, no host or query."""
    return f"{ex.method} {t.path_of(ex.url)}"


def _settings_for(e: TriageEvidence) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for setting, url in (("api-url", e.api_url), ("auth-url", e.auth_url), ("tracking-uri", e.tracking_uri),
                         ("direct-mlflow-url", e.direct_mlflow_url)):
        if url:
            names.setdefault(host_of(url), []).append(setting)
    return names


def _by_host(e: TriageEvidence) -> dict[str, list[Exchange]]:
    hosts = _settings_for(e)
    grouped: dict[str, list[Exchange]] = {h: [] for h in hosts}
    for ex in e.all_exchanges():
        host = host_of(ex.url)
        if host in grouped:
            grouped[host].append(ex)
    return grouped


def _keyed_tracking(e: TriageEvidence) -> list[Exchange]:
    return [x for x in e.keyed_exchanges() if e.is_tracking(x)]


# -- network --------------------------------------------------------------------------------------
_NETWORK_FIX = {
    "dns": "the name does not resolve: create or fix its DNS record, or correct the URL setting",
    "refused": "nothing listens there: check the port and scheme in the URL and the balancer listener",
    "timeout": "packets are dropped or the service hangs: check security groups, firewalls and that the "
               "service runs",
    "connection": "the connection breaks: check the balancer listener and any proxy in between",
}


#: What a failure class means, as words that fit "Nothing answers at HOST (setting): ...".
_NO_ANSWER_WORDS = {
    "dns": "the name does not resolve",
    "refused": "connection refused",
    "timeout": "the connection timed out",
    "connection": "the connection broke",
}


@_rule("HOST_UNREACHABLE")
def _host_unreachable(e: TriageEvidence) -> Match | None:
    settings = _settings_for(e)
    parts, lines, fixes = [], [], []
    for host, exs in _by_host(e).items():
        if not exs or any(x.status is not None for x in exs) or any(x.error == "tls" for x in exs):
            continue
        first = next((x for x in exs if x.error in t.NO_ANSWER), None)
        if first is None:
            continue
        from .fidelity import dependency_down

        if dependency_down(e, settings[host]) is not None:
            continue  # the API answers and names this part as down: its own code, this probe its evidence
        what = _NO_ANSWER_WORDS.get(first.error or "", first.error or "no answer")
        if first.error == "timeout":
            what += f" after {first.elapsed_ms / 1000:.1f} s"
        parts.append(f"{host} ({', '.join(settings[host])}): {what} before any HTTP status")
        lines.append(first)
        fixes.append(f"{host}: {_NETWORK_FIX.get(first.error or '', 'check the host')}")
        keyed = e.probe(ev.PROXY_KEY)
        if keyed is not None and keyed.ok and not {"api-url", "tracking-uri"} & set(settings[host]):
            names = " / ".join(f"--hokusai-{s}" for s in settings[host])
            parts[-1] += f", while keyed requests through the proxy succeed ({where(keyed)} -> {keyed.status})"
            fixes[-1] = (f"{host}: the platform itself works, so the URL you configured is wrong: fix {names} "
                         "(and where it comes from: command line, HOKUSAI_* env or ini)")
    if not parts:
        return None
    return Match("Nothing answers at " + "; ".join(parts) + ".", lines, "; ".join(fixes) + ".")


@_rule("TLS_ERROR")
def _tls_error(e: TriageEvidence) -> Match | None:
    bad = [x for exs in _by_host(e).values() for x in exs if x.status is None and x.error == "tls"]
    if not bad:
        return None
    hosts = sorted({host_of(x.url) for x in bad})
    return Match(f"The TLS handshake with {', '.join(hosts)} fails: {bad[0].error_detail or 'certificate error'}.",
                 bad[:3])


# -- credentials known before any request ---------------------------------------------------------
@_rule("KEY_MISSING")
def _key_missing(e: TriageEvidence) -> Match | None:
    if e.key_state != ev.KEY_MISSING:
        return None
    return Match("No Hokusai API key is configured, so no request was sent.",
                 ["HOKUSAI_API_KEY is unset and no --hokusai-api-key-file was given"])


@_rule("KEY_MALFORMED")
def _key_malformed(e: TriageEvidence) -> Match | None:
    if e.key_state != ev.KEY_MALFORMED:
        return None
    source = f" from {e.key_source}" if e.key_source else ""
    return Match(f"The API key {e.key_masked or ''}{source} is malformed ({e.key_problem}); it was not sent.",
                 [f"key {e.key_masked or '(masked)'}{source}: {e.key_problem}"])


# -- deployment -----------------------------------------------------------------------------------
def _direct_state(e: TriageEvidence) -> tuple[str, list[Exchange]]:
    health, root = e.probe(ev.MLFLOW_HEALTH), e.probe(ev.MLFLOW_ROOT)
    seen = [x for x in (health, root) if x is not None]
    if any(x.ok or (x.status is not None and 300 <= x.status < 400) for x in seen):
        return "answers", seen
    if seen:
        return f"fails too ({said(seen[-1])})", seen
    return "was not probed", seen


@_rule("API_SERVICE_DOWN")
def _api_down(e: TriageEvidence) -> Match | None:
    health = e.probe(ev.API_HEALTH)
    if health is None or health.status is None or health.ok:
        return None
    if health.status == 404 and not t.is_html(health) and not t.is_json(health):
        return None  # the balancer's plain-text default: ROUTE_NOT_CONFIGURED
    page = " (an HTML page from the balancer)" if t.is_html(health) else ""
    direct, direct_exs = _direct_state(e)
    return Match(f"The API service's /health answers {health.status}{page}, while direct MLflow {direct}.",
                 [health, *direct_exs])


@_rule("ROUTE_NOT_CONFIGURED")
def _route_not_configured(e: TriageEvidence) -> Match | None:
    no_key, keyed, health = e.probe(ev.PROXY_NO_KEY), e.probe(ev.PROXY_KEY), e.probe(ev.API_HEALTH)

    def plain_404(ex: Exchange | None) -> bool:
        return t.status(ex) == 404 and not t.is_json(ex)

    def kind(ex: Exchange) -> str:  # name the content type right: an HTML page is no plain text
        return "an HTML 404" if t.is_html(ex) else "a plain-text 404"

    mount = t.path_of(e.tracking_uri).rstrip("/") or "/"
    if plain_404(no_key):
        assert no_key is not None
        seen = [no_key] + ([keyed] if plain_404(keyed) else [])
        return Match(f"The balancer has no rule for {mount}/*: a request without a key gets {kind(no_key)} "
                     f"{_q(t.detail(no_key, 60))} instead of the proxy's 401.", seen,
                     f"Add a balancer listener rule forwarding {mount}/* to the API service's target group "
                     "(on the HTTPS listener too, not only HTTP).")
    if plain_404(health):
        assert health is not None
        return Match(f"The balancer answers the API's /health with {kind(health)}: no listener rule sends "
                     f"{e.api_url} to the API service.", [health],
                     "Add the listener rules for the API host (/health, /api/*, /api/mlflow/*) on the listener "
                     "this URL uses (HTTPS as well as HTTP).")
    return None


@_rule("PROXY_ROUTE_NOT_MOUNTED")
def _route_not_mounted(e: TriageEvidence) -> Match | None:
    for ex in _keyed_tracking(e):
        data = json_body(ex)
        if ex.status == 404 and isinstance(data, dict) and data.get("detail") == "Not Found" \
                and "error_code" not in data:
            no_key = e.probe(ev.PROXY_NO_KEY)
            mount = t.path_of(e.tracking_uri).rstrip("/") or "/"
            before = f" ({said(no_key)} without a key)" if no_key is not None and no_key.status == 401 else ""
            return Match(f"The API service authenticates {mount}{before} but has no route there: with the key "
                         f"{where(ex)} gets JSON 404 {{\"detail\":\"Not Found\"}}.",
                         [x for x in (no_key, ex) if x is not None],
                         f"Mount the MLflow proxy router at {mount} in the API app and deploy the task "
                         "definition that has it (the running build predates it).")
    return None


_MLFLOW_WORDS = ("mlflow", "upstream", "failed to connect")


@_rule("MLFLOW_UNREACHABLE")
def _mlflow_unreachable(e: TriageEvidence) -> Match | None:
    bad = next((x for x in _keyed_tracking(e) if x.status in (502, 504)
                and (t.body_has(x, *_MLFLOW_WORDS) or (t.is_json(x) and not t.is_html(x)))), None)
    if bad is None:
        return None
    seen: list[Exchange] = [bad]
    leg = e.probe(ev.API_HEALTH_MLFLOW)
    if leg is not None and not leg.ok:
        seen.append(leg)
    direct, direct_exs = _direct_state(e)
    seen += direct_exs
    if direct == "answers":
        fix = ("MLflow itself answers, so the API service's MLflow URL is wrong or unreachable from it: fix "
               "MLFLOW_SERVER_URL / MLFLOW_TRACKING_URI on the API service (service-discovery name, port, "
               "http vs https, mTLS CA / client certificate) and its security group to MLflow.")
    else:
        fix = ("Direct MLflow does not answer either: restart the MLflow service and check its target group; "
               "then check MLFLOW_SERVER_URL on the API service.")
    return Match(f"The proxy cannot reach MLflow: {where(bad)} -> {said(bad)}; direct MLflow {direct}.", seen, fix)


@_rule("MLFLOW_PATH_MISMATCH")
def _path_mismatch(e: TriageEvidence) -> Match | None:
    bad = next((x for x in _keyed_tracking(e) if not t.is_artifact(x) and x.status == 404
                and (t.body_has(x, "RESOURCE_NOT_FOUND") or t.is_html(x))), None)
    if bad is None:
        from .fidelity import artifact_path_untranslated

        return artifact_path_untranslated(e)
    message = t.detail(bad, 200)
    lost = "api/2.0/mlflow" not in message and "resource was not found" in message.lower()
    if lost:
        why = ("the upstream path has lost its api/2.0/mlflow prefix, so the mount strips its own prefix "
               "(the /api/2.0/mlflow mount)")
        fix = ("Forward the full api/2.0/mlflow/... path to MLflow (the /api/2.0/mlflow mount must not strip "
               f"it), and have clients use {e.tracking_uri or '{api}/api/mlflow'} as tracking URI.")
    else:
        why = "MLflow does not serve REST at the path the proxy uses (static-prefix / ajax-api mismatch)"
        fix = ("Point MLFLOW_SERVER_URL on the API service at the internal MLflow root (no ajax-api translation "
               "needed), or keep MLflow below 3.12 while it runs with --static-prefix /mlflow.")
    return Match(f"Authenticated REST calls get 404 from MLflow: {where(bad)} -> {_q(message)}; {why}.",
                 [bad], fix)


def _validations(e: TriageEvidence, style: str | None = None) -> list[tuple[str, str | None, Exchange]]:
    return [v for v in e.validations() if style is None or v[0] == style]


def _proxy_auth_failure(e: TriageEvidence) -> Exchange | None:
    """The keyed proxy exchange whose detail is 'Authentication service ...', if any."""
    return next((x for x in _keyed_tracking(e) if x.status in (401, 503)
                 and t.detail(x).startswith(t.AUTH_SERVICE_PREFIX)), None)


@_rule("AUTH_SERVICE_DOWN")
def _auth_down(e: TriageEvidence) -> Match | None:
    health = e.probe(ev.AUTH_HEALTH)
    proxy = _proxy_auth_failure(e)
    extra = [x for x in (proxy,) if x is not None]
    if health is not None and health.status is not None and not health.ok:
        page = " (an HTML page from the balancer)" if t.is_html(health) else ""
        also = f"; the proxy says {_q(t.detail(proxy))}" if proxy is not None else ""
        return Match(f"The auth service's /health answers {health.status}{page}{also}.", [health, *extra])
    erroring = [v for v in _validations(e) if (v[2].status or 0) >= 500]
    if erroring:
        ex = erroring[0][2]
        return Match(f"The auth service answers /health but validation fails with {said(ex)} (a server or "
                     "database error).", [ex, *extra],
                     "Read the auth service's logs (database connectivity, migrations: UndefinedTable) and "
                     "fix the failing dependency; the proxy answers 503 'Authentication service error' until then.")
    from .fidelity import auth_dependency_down

    stopped = auth_dependency_down(e)
    if stopped is not None and health is not None and health.status is None:
        after = t.retry_after(stopped)
        retry = f" (Retry-After: {after})" if after else ""
        return Match(f"The auth service is down: the API answers {said(stopped)}{retry} to {where(stopped)}, and "
                     f"the auth service itself does not answer at {host_of(health.url)} (--hokusai-auth-url: {health.error}).",
                     [stopped, health],
                     "Start the auth service (or its tasks) again and read why it stopped (its logs, the target "
                     "group's health checks, the database it needs); the API answers 503 until it is back. If it "
                     "runs, check that AUTH_SERVICE_URL on the API service and the balancer reach its port.")
    if proxy is not None and "unavailable" in t.detail(proxy).lower() and any(v[2].ok for v in _validations(e)):
        return Match(f"The auth service answers here, but the API service cannot connect to it: the proxy says "
                     f"{_q(t.detail(proxy))}.", [proxy],
                     "Fix AUTH_SERVICE_URL / HOKUSAI_AUTH_SERVICE_URL on the API service and its network path "
                     f"(DNS, security group) to {host_of(e.auth_url) or 'the auth host'}.")
    return None


@_rule("AUTH_SERVICE_MISROUTED")
def _auth_misrouted(e: TriageEvidence) -> Match | None:
    health = e.probe(ev.AUTH_HEALTH)
    if not t.ok(health):
        return None
    assert health is not None
    vals = [v[2] for v in _validations(e)]
    lost = [x for x in vals if x.status in (404, 405) or (x.status is None and x.error == "timeout")]
    if vals and lost and not any(x.ok for x in vals) and len(lost) == len(vals):
        how = "times out" if lost[0].status is None else f"gets {said(lost[0])}"
        return Match(f"The auth service answers /health but POST {t.path_of(lost[0].url)} {how}: the validate "
                     "calls do not reach it.", [health, lost[0], _proxy_auth_failure(e)])
    proxy = _proxy_auth_failure(e)
    header_ok = any(x.ok for _, _, x in _validations(e, "header"))
    if proxy is not None and header_ok and "unavailable" not in t.detail(proxy).lower():
        return Match(f"Validation works from here, but the API service's calls to the auth service fail: the "
                     f"proxy says {_q(t.detail(proxy))}.", [proxy, health],
                     "The API service's AUTH_SERVICE_URL points elsewhere or the balancer routes its validate "
                     "calls to another target: fix the URL or the auth host's /api/v1/* rule.")
    return None


# -- configuration / credentials ------------------------------------------------------------------
def _registered_service(e: TriageEvidence) -> str | None:
    from ..auth import parse_registered_service

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


def _proxy_invalid(e: TriageEvidence) -> Exchange | None:
    return next((x for x in _keyed_tracking(e) if x.status == 401 and t.INVALID_KEY.lower() in
                 t.detail(x).lower()), None)


@_rule("SERVICE_ID_REJECTED")
def _service_id_rejected(e: TriageEvidence) -> Match | None:
    vals = list(e.validations())
    registered = _registered_service(e)
    reg = f"'{registered}'" if registered else "its registered service"
    proxy = _proxy_invalid(e)
    configured = [v for v in vals if v[1] == e.service_id]
    accepted = [v for v in vals if v[2].ok and v[1] != e.service_id]
    if configured and accepted and all(v[2].status == 401 for v in configured):
        ok_sids = ", ".join(dict.fromkeys(_sid(v[1]) for v in accepted))
        also = f"; the proxy rejects it too ({_q(t.detail(proxy))})" if proxy is not None else ""
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
            f"rejects it with {_q(t.detail(proxy))}: the API service validates with another service_id "
            f"than {reg}.",
            [header_ok[-1][2], proxy],
            f"Set AUTH_SERVICE_ID={registered or 'platform'} on the API service and "
            f"HOKUSAI_AUTH_SERVICE_ID={registered or 'platform'} on the MLflow admin gateway, then redeploy "
            "(the auth service accepts only website, prediction and platform). If the key has allowed_ips, "
            "check the client_ip the proxy forwards.")
    return None


_REJECTIONS = (400, 401, 403, 415, 422)


@_rule("AUTH_CONTRACT_MISMATCH")
def _contract_mismatch(e: TriageEvidence) -> Match | None:
    header, body = _validations(e, "header"), _validations(e, "body")
    if not header or not body or any(v[2].ok for v in header) or not any(v[2].ok for v in body):
        return None
    if not all(v[2].status in _REJECTIONS for v in header):
        return None
    proxy = _proxy_invalid(e) or _proxy_auth_failure(e)
    if proxy is None:
        return None
    h, b = header[0], next(v for v in body if v[2].ok)
    return Match(
        f"The auth service accepts the key only in body style ({{\"api_key\": ...}}, {_sid(b[1])}); as a Bearer "
        f"header it answers {said(h[2])}, and the proxy, which sends the header, gets {_q(t.detail(proxy))}.",
        [b[2], h[2], proxy],
        "Make POST /api/v1/keys/validate accept 'Authorization: Bearer <key>' (as the real auth service does), "
        "or make the API middleware send the key as body api_key; both sides must use one style.")


@_rule("KEY_REJECTED")
def _key_rejected(e: TriageEvidence) -> Match | None:
    vals = [v[2] for v in e.validations()]
    proxy = _proxy_invalid(e)
    masked = e.key_masked or "the key"
    if vals:
        if any(x.ok for x in vals) or not any(x.status == 401 for x in vals):
            return None
        if not all(x.status in _REJECTIONS for x in vals):
            return None
        keyed = e.probe(ev.PROXY_KEY)
        if keyed is not None and keyed.ok:
            return None
        first = next((x for x in vals if x.status == 401), vals[0])
        tail = f"; the proxy answers {_q(t.detail(proxy))}" if proxy is not None else ""
        return Match(f"The auth service rejects {masked} in every style and service_id tried "
                     f"({len(vals)} validations, e.g. {said(first)}){tail}.", [first, proxy])
    if proxy is not None:
        return Match(f"The proxy rejects {masked} with {_q(t.detail(proxy))}, and the key could not be validated "
                     "directly to tell a wrong service_id from a bad key.", [proxy])
    return None


@_rule("PROXY_STRIPS_AUTH")
def _strips_auth(e: TriageEvidence) -> Match | None:
    bad = next((x for x in _keyed_tracking(e) if x.status == 401 and t.KEY_REQUIRED.lower() in t.detail(x).lower()),
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


@_rule("HOST_HEADER_REJECTED")
def _host_header(e: TriageEvidence) -> Match | None:
    bad = next((x for x in e.all_exchanges() if x.status == 403 and t.body_has(x, "Invalid Host header")), None)
    if bad is None:
        return None
    via = "through the proxy" if e.is_tracking(bad) else "directly"
    return Match(f"MLflow rejects the Host header it receives ({via}): {where(bad)} -> 403 text/plain "
                 f"{_q(t.detail(bad, 80))}.", [bad])


def _any(exs: Iterable[Exchange], test: Callable[[Exchange], bool]) -> Exchange | None:
    return next((x for x in exs if test(x)), None)


@_rule("REGISTRY_ADMIN_REQUIRED")
def _registry_admin(e: TriageEvidence) -> Match | None:
    pool = [*e.keyed_exchanges(), *[x for x in (e.probe(ev.MLFLOW_HEALTH), e.probe(ev.MLFLOW_ROOT)) if x]]
    bad = _any(pool, lambda x: x.status == 403 and t.body_has(x, "REGISTRY_ADMIN_REQUIRED"))
    if bad is None:
        return None
    layer = "the API service" if e.is_tracking(bad) else "the MLflow admin gateway"
    reads = " (a read)" if bad.method == "GET" else ""
    return Match(f"Registry requests are refused for {e.key_masked or 'the key'}, which is not a registry admin: "
                 f"{where(bad)}{reads} -> 403 REGISTRY_ADMIN_REQUIRED from {layer}.", [bad])


@_rule("PAYMENT_REQUIRED")
def _payment(e: TriageEvidence) -> Match | None:
    bad = _any(e.keyed_exchanges(), lambda x: x.status == 402)
    if bad is None:
        return None
    return Match(f"The platform answers 402 {_q(t.detail(bad))} to {where(bad)} for "
                 f"{e.key_masked or 'the key'}: its account's balance or billing does not allow the call.", [bad])


@_rule("RATE_LIMITED")
def _rate_limited(e: TriageEvidence) -> Match | None:
    pool = [*e.keyed_exchanges(), *[v[2] for v in e.validations()]]
    bad = _any(pool, lambda x: x.status == 429)
    if bad is None:
        return None
    after = t.retry_after(bad)
    wait = f" (Retry-After: {after} s)" if after else ""
    return Match(f"{where(bad)} answers 429 {_q(t.detail(bad))}{wait}: the key {e.key_masked or ''} is "
                 "rate limited.".replace("  ", " "), [bad])


def _write_forbidden(x: Exchange) -> bool:
    return x.status == 403 and not t.body_has(x, "REGISTRY_ADMIN_REQUIRED") and t.body_has(
        x, "FORBIDDEN", "current_scopes", "write permissions")


@_rule("KEY_LACKS_WRITE_SCOPE")
def _write_scope(e: TriageEvidence) -> Match | None:
    bad = _any(e.keyed_exchanges(), _write_forbidden)
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


@_rule("CLIENT_TOKEN_LOST")
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


# -- artifact-only --------------------------------------------------------------------------------
@_rule("ARTIFACTS_DISABLED")
def _artifacts(e: TriageEvidence) -> Match | None:
    tracked = _keyed_tracking(e)
    artifacts = [x for x in tracked if t.is_artifact(x)]
    meta_ok = any(x.ok for x in tracked if not t.is_artifact(x))
    disabled = _any(artifacts, lambda x: t.body_has(x, "ARTIFACTS_DISABLED"))
    if disabled is not None:
        return Match(f"Artifact calls are refused by the proxy: {where(disabled)} -> {said(disabled)} "
                     "(artifact serving is off in the API service).", [disabled],
                     "Set MLFLOW_SERVE_ARTIFACTS=true on the API service (its MLflow proxy refuses mlflow-artifacts "
                     "paths otherwise) and redeploy.")
    if not meta_ok:
        return None
    # MLflow 3.x answers 503 '--no-serve-artifacts' when serving is off; a 404 there is the untranslated
    # artifact path (MLFLOW_PATH_MISMATCH), not serving switched off.
    missing = _any(artifacts, lambda x: x.status == 503 and t.body_has(x, "serve-artifacts", "serve_artifacts"))
    if missing is not None:
        return Match(f"Experiments and models work but artifact serving is off in MLflow: {where(missing)} -> "
                     f"{said(missing)}.",
                     [missing],
                     "Start MLflow with --serve-artifacts (and --artifacts-destination) and redeploy it.")
    broken = _any(artifacts, lambda x: x.method == "PUT" and (x.status or 0) >= 500)
    if broken is not None:
        return Match(f"Artifact uploads fail in MLflow's artifact store: {where(broken)} -> {said(broken)}.",
                     [broken],
                     "Give the MLflow service write access to its artifact store (s3:PutObject, s3:ListBucket "
                     "on the bucket of --artifacts-destination) and check MLflow's log for the error.")
    return None


# -- security -------------------------------------------------------------------------------------
@_rule("AUTH_BYPASS")
def _bypass(e: TriageEvidence) -> Match | None:
    # Only MLflow's own JSON counts as served: an HTML page or another service's JSON is NOT_HOKUSAI_API.
    served = [(what, x) for what, x in (("no key", e.probe(ev.PROXY_NO_KEY)),
                                        ("a well-formed key nobody minted", e.probe(ev.PROXY_UNKNOWN_KEY)))
              if x is not None and x.ok and t.is_mlflow_search(x)]
    if not served:
        return None
    whats = " and ".join(w for w, _ in served)
    return Match(f"The proxy serves MLflow to requests with {whats}: {where(served[0][1])} -> "
                 f"{served[0][1].status}. Keys are not enforced.", [x for _, x in served])


#: How long the platform may keep serving a revoked key from its validation cache (contract F5).
REVOCATION_GRACE_S = 60.0


@_rule("REVOCATION_DELAYED")
def _revocation(e: TriageEvidence) -> Match | None:
    delay = e.facts.get(ev.FACT_REVOCATION_DELAY)
    tolerance = float(e.facts.get(ev.FACT_REVOCATION_TOLERANCE) or 0.0)
    if isinstance(delay, (int, float)) and delay > tolerance:
        allowed = f" (allowed: {tolerance:.0f} s)" if tolerance else ""
        return Match(f"A revoked key was still served {delay:.0f} s after its revocation{allowed}.",
                     [f"fact: {ev.FACT_REVOCATION_DELAY} = {delay:.1f}"])
    revoked, unknown = e.probe(ev.PROXY_REVOKED_KEY), e.probe(ev.PROXY_UNKNOWN_KEY)
    if revoked is None or not revoked.ok or t.ok(unknown):
        return None
    revoked_at = e.facts.get(ev.FACT_REVOKED_AT)
    if isinstance(revoked_at, (int, float)) and time.time() - revoked_at < REVOCATION_GRACE_S:
        return None
    since = f" {time.time() - revoked_at:.0f} s after its revocation" if isinstance(revoked_at, (int, float)) else ""
    return Match(f"The revoked key {e.revoked_key_masked or ''} is still served by the proxy{since} "
                 f"({where(revoked)} -> {revoked.status}).".replace("  ", " "), [revoked])


# -- other ----------------------------------------------------------------------------------------
_EXPECTED_401 = (ev.PROXY_NO_KEY, ev.PROXY_UNKNOWN_KEY, ev.PROXY_REVOKED_KEY)


@_rule("UNEXPECTED_RESPONSE")
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
