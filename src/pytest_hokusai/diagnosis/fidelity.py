"""Matchers for the real platform's quirks that the first rules table got wrong (issue 9).

* ``PROXY_DROPS_REQUEST_BODY``: every real proxy forwards a body only for POST, PUT and PATCH
  (contract section 5), so MLflow's JSON-body DELETEs reach it empty and it answers 400
  ``Missing value for required parameter '<name>'``.
* ``NOT_HOKUSAI_API``: a configured URL answers, but as a website (HTML, a catch-all, a login wall)
  or another service's JSON, never as the Hokusai API or MLflow.
* :func:`dependency_down`: the API answers and names a stopped dependency (503 ``Authentication
  service unavailable`` / 502 ``Failed to connect to MLflow server at ...``); a refused direct probe of
  that dependency is then its evidence, not ``HOST_UNREACHABLE`` (contract F1, F6, F14).
"""

from __future__ import annotations

from ..evidence import Exchange
from . import evidence as ev
from . import tells as t
from .evidence import TriageEvidence, host_of
from .matchers import Match, Matcher, said, where

__all__ = [
    "AUTH_DOWN_DETAILS",
    "FIDELITY_MATCHERS",
    "MLFLOW_DOWN_DETAIL",
    "artifact_path_untranslated",
    "auth_dependency_down",
    "dependency_down",
    "mlflow_dependency_down",
]

#: The middleware's details when the auth service did not answer at all (contract 2.4).
AUTH_DOWN_DETAILS = ("Authentication service unavailable", "Authentication service timeout")
#: The proxy's detail when MLflow refused the connection (contract section 5, F14).
MLFLOW_DOWN_DETAIL = "Failed to connect to MLflow server at"


def _keyed_tracking(e: TriageEvidence) -> list[Exchange]:
    return [x for x in e.keyed_exchanges() if e.is_tracking(x)]


def auth_dependency_down(e: TriageEvidence) -> Exchange | None:
    """The proxy's 503/401 saying it could not reach the auth service at all, if any."""
    return next((x for x in _keyed_tracking(e) if x.status in (401, 503)
                 and t.detail(x).startswith(AUTH_DOWN_DETAILS)), None)


def mlflow_dependency_down(e: TriageEvidence) -> Exchange | None:
    """The proxy's 502 ``Failed to connect to MLflow server at <base>``, if any."""
    return next((x for x in _keyed_tracking(e) if x.status == 502 and MLFLOW_DOWN_DETAIL in t.detail(x, 300)),
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


def _settings_of(e: TriageEvidence, url_host: str) -> list[str]:
    return [name for name, url in (("api-url", e.api_url), ("auth-url", e.auth_url),
                                   ("tracking-uri", e.tracking_uri), ("direct-mlflow-url", e.direct_mlflow_url))
            if url and host_of(url) == url_host]


# -- MLFLOW_PATH_MISMATCH, artifact routes only ------------------------------------------------------
def artifact_path_untranslated(e: TriageEvidence) -> Match | None:
    """F11 (2025-07-22): metadata works through the proxy, only the artifact routes get MLflow's 404."""
    tracked = _keyed_tracking(e)
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


# -- PROXY_DROPS_REQUEST_BODY ------------------------------------------------------------------------
def match_drops_body(e: TriageEvidence) -> Match | None:
    dropped = [x for x in e.all_exchanges() if e.is_tracking(x) and e.uses_key(x) and t.drops_body(x)]
    if not dropped:
        return None
    first = dropped[0]
    worked = next((x for x in _keyed_tracking(e) if x.ok and x.method in ("POST", "PUT", "PATCH")), None)
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


# -- NOT_HOKUSAI_API -----------------------------------------------------------------------------------
#: probe -> what the Hokusai API or MLflow would have answered there
_EXPECTED = {
    ev.API_HEALTH: "api-health",
    ev.PROXY_NO_KEY: "mlflow-search",
    ev.PROXY_KEY: "mlflow-search",
    ev.PROXY_UNKNOWN_KEY: "mlflow-search",
    ev.AUTH_HEALTH: "auth",
}


def match_not_hokusai(e: TriageEvidence) -> Match | None:
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
        settings = _settings_of(e, host) or [host]
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


FIDELITY_MATCHERS: dict[str, Matcher] = {
    "PROXY_DROPS_REQUEST_BODY": match_drops_body,
    "NOT_HOKUSAI_API": match_not_hokusai,
}
