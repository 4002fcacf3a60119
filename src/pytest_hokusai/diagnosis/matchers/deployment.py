"""The deployment codes: a service is down, unrouted, unmounted, or forwards requests wrongly.

Besides the matchers, :func:`dependency_down` and its two halves tell when the API answers and
names a stopped dependency (503 'Authentication service unavailable' / 502 'Failed to connect to
MLflow server at ...'): a refused direct probe of that dependency is then its evidence, not
HOST_UNREACHABLE (contract F1, F6, F14).
"""

from __future__ import annotations

from ...evidence import Exchange
from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence, host_of, json_body
from .base import Match, Matcher, keyed_tracking, proxy_auth_failure, quoted, said, validations, where

__all__ = ["AUTH_DOWN_DETAILS", "MATCHERS", "MLFLOW_DOWN_DETAIL", "auth_dependency_down", "dependency_down",
           "mlflow_dependency_down"]


#: The middleware's details when the auth service did not answer at all (contract 2.4).
AUTH_DOWN_DETAILS = ("Authentication service unavailable", "Authentication service timeout")
#: The proxy's detail when MLflow refused the connection (contract section 5, F14).
MLFLOW_DOWN_DETAIL = "Failed to connect to MLflow server at"


def auth_dependency_down(e: TriageEvidence) -> Exchange | None:
    """The proxy's 503/401 saying it could not reach the auth service at all, if any."""
    return next((x for x in keyed_tracking(e) if x.status in (401, 503)
                 and t.detail(x).startswith(AUTH_DOWN_DETAILS)), None)


def mlflow_dependency_down(e: TriageEvidence) -> Exchange | None:
    """The proxy's 502 ``Failed to connect to MLflow server at <base>``, if any."""
    return next((x for x in keyed_tracking(e) if x.status == 502 and MLFLOW_DOWN_DETAIL in t.detail(x, 300)),
                None)


def dependency_down(e: TriageEvidence, settings: list[str]) -> Exchange | None:
    """The API's answer naming the dependency behind these settings as unavailable, or ``None``.

    ``settings`` are the URL settings that point at one unreachable host: ``auth-url`` is explained by
    the proxy's 'Authentication service unavailable/timeout', ``direct-mlflow-url`` by its 'Failed to
    connect to MLflow server at'. The API's own URLs (``api-url``, ``tracking-uri``) never are: if the
    API does not answer, nothing of the deployment does.
    """
    if {"api-url", "tracking-uri"} & set(settings):
        return None
    if "auth-url" in settings:
        return auth_dependency_down(e)
    if "direct-mlflow-url" in settings:
        return mlflow_dependency_down(e)
    return None


def _direct_state(e: TriageEvidence) -> tuple[str, list[Exchange]]:
    health, root = e.probe(ev.MLFLOW_HEALTH), e.probe(ev.MLFLOW_ROOT)
    seen = [x for x in (health, root) if x is not None]
    if any(x.ok or (x.status is not None and 300 <= x.status < 400) for x in seen):
        return "answers", seen
    if seen:
        return f"fails too ({said(seen[-1])})", seen
    return "was not probed", seen


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
                     f"{quoted(t.detail(no_key, 60))} instead of the proxy's 401.", seen,
                     f"Add a balancer listener rule forwarding {mount}/* to the API service's target group "
                     "(on the HTTPS listener too, not only HTTP).")
    if plain_404(health):
        assert health is not None
        return Match(f"The balancer answers the API's /health with {kind(health)}: no listener rule sends "
                     f"{e.api_url} to the API service.", [health],
                     "Add the listener rules for the API host (/health, /api/*, /api/mlflow/*) on the listener "
                     "this URL uses (HTTPS as well as HTTP).")
    return None


def _route_not_mounted(e: TriageEvidence) -> Match | None:
    for ex in keyed_tracking(e):
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


def _mlflow_unreachable(e: TriageEvidence) -> Match | None:
    bad = next((x for x in keyed_tracking(e) if x.status in (502, 504)
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


def _path_mismatch(e: TriageEvidence) -> Match | None:
    # The error_code, not any mention: MLflow >= 3.1x adds "error_class": "RESOURCE_NOT_FOUND" to every
    # entity-level 404 (RESOURCE_DOES_NOT_EXIST, e.g. a registered model that was never created).
    bad = next((x for x in keyed_tracking(e) if not t.is_artifact(x) and x.status == 404
                and (t.body_has(x, '"error_code":"RESOURCE_NOT_FOUND"', '"error_code": "RESOURCE_NOT_FOUND"')
                     or t.is_html(x))), None)
    if bad is None:
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
    return Match(f"Authenticated REST calls get 404 from MLflow: {where(bad)} -> {quoted(message)}; {why}.",
                 [bad], fix)


def artifact_path_untranslated(e: TriageEvidence) -> Match | None:
    """F11 (2025-07-22): metadata works through the proxy, only the artifact routes get MLflow's 404."""
    tracked = keyed_tracking(e)
    meta = next((x for x in tracked if x.ok and not t.is_artifact(x)), None)
    bad = next((x for x in tracked if t.is_artifact(x) and x.status == 404
                and (t.is_html(x) or t.body_has(x, "RESOURCE_NOT_FOUND"))), None)
    if meta is None or bad is None:
        return None
    return Match(f"Experiments, runs and models work through the proxy ({where(meta)} -> {meta.status}), but the "
                 f"artifact routes get MLflow's 404: {where(bad)} -> {said(bad)}. The proxy forwards "
                 "api/2.0/mlflow-artifacts/ to a path MLflow does not serve (translated for api/2.0/mlflow/ only).",
                 [meta, bad],
                 "In the API service's MLflow proxy, translate api/2.0/mlflow-artifacts/ to "
                 "ajax-api/2.0/mlflow-artifacts/ exactly like api/2.0/mlflow/ when MLFLOW_SERVER_URL is the public "
                 "/mlflow URL (or point MLFLOW_SERVER_URL at the internal MLflow root, where no translation is "
                 "needed), and redeploy.")


def _auth_down(e: TriageEvidence) -> Match | None:
    health = e.probe(ev.AUTH_HEALTH)
    proxy = proxy_auth_failure(e)
    extra = [x for x in (proxy,) if x is not None]
    if health is not None and health.status is not None and not health.ok:
        page = " (an HTML page from the balancer)" if t.is_html(health) else ""
        also = f"; the proxy says {quoted(t.detail(proxy))}" if proxy is not None else ""
        return Match(f"The auth service's /health answers {health.status}{page}{also}.", [health, *extra])
    erroring = [v for v in validations(e) if (v[2].status or 0) >= 500]
    if erroring:
        ex = erroring[0][2]
        return Match(f"The auth service answers /health but validation fails with {said(ex)} (a server or "
                     "database error).", [ex, *extra],
                     "Read the auth service's logs (database connectivity, migrations: UndefinedTable) and "
                     "fix the failing dependency; the proxy answers 503 'Authentication service error' until then.")
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
    if proxy is not None and "unavailable" in t.detail(proxy).lower() and any(v[2].ok for v in validations(e)):
        return Match(f"The auth service answers here, but the API service cannot connect to it: the proxy says "
                     f"{quoted(t.detail(proxy))}.", [proxy],
                     "Fix AUTH_SERVICE_URL / HOKUSAI_AUTH_SERVICE_URL on the API service and its network path "
                     f"(DNS, security group) to {host_of(e.auth_url) or 'the auth host'}.")
    return None


def _auth_misrouted(e: TriageEvidence) -> Match | None:
    health = e.probe(ev.AUTH_HEALTH)
    if not t.ok(health):
        return None
    assert health is not None
    vals = [v[2] for v in validations(e)]
    lost = [x for x in vals if x.status in (404, 405) or (x.status is None and x.error == "timeout")]
    if vals and lost and not any(x.ok for x in vals) and len(lost) == len(vals):
        how = "times out" if lost[0].status is None else f"gets {said(lost[0])}"
        return Match(f"The auth service answers /health but POST {t.path_of(lost[0].url)} {how}: the validate "
                     "calls do not reach it.", [health, lost[0], proxy_auth_failure(e)])
    proxy = proxy_auth_failure(e)
    header_ok = any(x.ok for _, _, x in validations(e, "header"))
    if proxy is not None and header_ok and "unavailable" not in t.detail(proxy).lower():
        return Match(f"Validation works from here, but the API service's calls to the auth service fail: the "
                     f"proxy says {quoted(t.detail(proxy))}.", [proxy, health],
                     "The API service's AUTH_SERVICE_URL points elsewhere or the balancer routes its validate "
                     "calls to another target: fix the URL or the auth host's /api/v1/* rule.")
    return None


# The real proxies forward a body only for POST, PUT and PATCH (contract section 5).
def _drops_body(e: TriageEvidence) -> Match | None:
    dropped = [x for x in e.all_exchanges() if e.is_tracking(x) and e.uses_key(x) and t.drops_body(x)]
    if not dropped:
        return None
    first = dropped[0]
    worked = next((x for x in keyed_tracking(e) if x.ok and x.method in ("POST", "PUT", "PATCH")), None)
    paths = sorted({t.path_of(x.url).rsplit("/api/2.0/mlflow/", 1)[-1] for x in dropped})
    also = f" while its POST calls work ({where(worked)} -> {worked.status})" if worked is not None else ""
    return Match(
        f"The proxy drops the body of DELETE requests: {where(first)} -> {said(first)}{also}; MLflow never "
        f"saw the parameter the stock client sent, so {', '.join(paths)} cannot work through the tracking URI "
        "and what the run registered stays behind.",
        [first, *dropped[1:3], worked],
        "Forward the request body for DELETE too in the API service's MLflow proxy "
        "(src/api/routes/mlflow_proxy_improved.py: it forwards a body only for POST, PUT and PATCH; stream it "
        "for every method that carries one) and redeploy; then delete this run's leftovers. Meanwhile "
        "--hokusai-accept PROXY_DROPS_REQUEST_BODY gates deploys on registration alone.")


MATCHERS: dict[str, Matcher] = {
    "API_SERVICE_DOWN": _api_down,
    "ROUTE_NOT_CONFIGURED": _route_not_configured,
    "PROXY_ROUTE_NOT_MOUNTED": _route_not_mounted,
    "MLFLOW_UNREACHABLE": _mlflow_unreachable,
    "MLFLOW_PATH_MISMATCH": _path_mismatch,
    "AUTH_SERVICE_DOWN": _auth_down,
    "AUTH_SERVICE_MISROUTED": _auth_misrouted,
    "PROXY_DROPS_REQUEST_BODY": _drops_body,
}
