"""The API service and its MLflow proxy: health, the proxied REST API, the discovery matrix."""

from __future__ import annotations

import pytest

from ._support import describe, json_detail

pytestmark = [pytest.mark.live, pytest.mark.hokusai_proxy]

SEARCH = "api/2.0/mlflow/experiments/search?max_results=1"
PROXY_SAMPLES = 5


def test_api_health(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("GET", hokusai_settings.api_url + "/health", key=None, label="check:api-health")
    assert result.exchange.status == 200, f"API /health is not 200: {describe(result)}"
    assert isinstance(result.json, dict) and result.json.get("status") == "healthy", (
        f"API /health does not report healthy: {describe(result)}"
    )


def test_api_reaches_mlflow(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("GET", hokusai_settings.api_url + "/api/health/mlflow", key=None,
                                   label="check:api-health-mlflow")
    assert result.exchange.status == 200, f"the API service cannot reach MLflow: {describe(result)}"
    assert isinstance(result.json, dict) and result.json.get("status") == "ok", describe(result)


def test_experiments_search_through_proxy(hokusai_session, hokusai_settings):
    for _ in range(PROXY_SAMPLES):
        result = hokusai_session.probe("GET", f"{hokusai_settings.tracking_uri}/{SEARCH}",
                                       label="check:proxy-search")
        assert result.exchange.status == 200, f"experiments/search through the proxy failed: {describe(result)}"
        assert isinstance(result.json, dict), f"expected MLflow JSON: {describe(result)}"


# The old endpoint-discovery script's matrix. Every cell is recorded as evidence; only the cells the
# contract fixes are asserted: through /api/mlflow, auth runs before routing, so no key -> 401 and the
# key -> 200 on the REST path (contract section 7, triage steps 3 and 4). Direct /mlflow and the
# ajax-api cells depend on the deployment's era (static prefix, admin gateway) and are only recorded.
MATRIX = [
    (mount, api, auth)
    for mount in ("proxy", "direct")
    for api in ("api/2.0", "ajax-api/2.0")
    for auth in ("key", "no-key")
]


@pytest.mark.parametrize(("mount", "api", "auth"), MATRIX, ids=["-".join(c) for c in MATRIX])
def test_discovery_matrix(hokusai_session, hokusai_settings, record_property, mount, api, auth):
    base = hokusai_settings.tracking_uri if mount == "proxy" else hokusai_settings.direct_mlflow_url
    url = f"{base}/{api}/mlflow/experiments/search?max_results=1"
    result = hokusai_session.probe("GET", url, key=hokusai_session.key if auth == "key" else None,
                                   label=f"check:discovery:{mount}:{api}:{auth}")
    record_property("hokusai_discovery", f"{mount} {api} {auth} -> {result.exchange.status}")
    if mount == "proxy" and auth == "no-key":
        assert result.exchange.status == 401, f"the proxy must ask for a key before routing: {describe(result)}"
        assert json_detail(result) == "API key required", describe(result)
    elif mount == "proxy" and api == "api/2.0":
        assert result.exchange.status == 200, f"the proxied REST path failed with the key: {describe(result)}"
    else:
        assert result.exchange.status is not None, f"no HTTP answer at all: {describe(result)}"
