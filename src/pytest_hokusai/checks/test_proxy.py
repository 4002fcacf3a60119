"""The API service and its MLflow proxy: health, the proxied REST API, the discovery matrix, and
deletes through the proxy with the stock MLflow client."""

from __future__ import annotations

import pytest

from ._support import HOST_SAFE_FILTERS, describe, json_detail, keep_leftovers, record

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_proxy, *HOST_SAFE_FILTERS]

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
def test_discovery_matrix(hokusai_session, hokusai_settings, request, mount, api, auth):
    base = hokusai_settings.tracking_uri if mount == "proxy" else hokusai_settings.direct_mlflow_url
    url = f"{base}/{api}/mlflow/experiments/search?max_results=1"
    result = hokusai_session.probe("GET", url, key=hokusai_session.key if auth == "key" else None,
                                   label=f"check:discovery:{mount}:{api}:{auth}")
    record(request, "hokusai_discovery", f"{mount} {api} {auth} -> {result.exchange.status}")
    if mount == "proxy" and auth == "no-key":
        assert result.exchange.status == 401, f"the proxy must ask for a key before routing: {describe(result)}"
        assert json_detail(result) == "API key required", describe(result)
    elif mount == "proxy" and api == "api/2.0":
        assert result.exchange.status == 200, f"the proxied REST path failed with the key: {describe(result)}"
    else:
        assert result.exchange.status is not None, f"no HTTP answer at all: {describe(result)}"


# Every real proxy forwards a request body only for POST, PUT and PATCH (contract section 5): the
# stock client's JSON-body DELETEs then reach MLflow empty. This check deletes through the tracking
# URI on purpose, so that a registration gate sees it (PROXY_DROPS_REQUEST_BODY), and registers into
# its own canary model so broken deletes leave one model behind however often it runs. "mlflow_client"
# in its name keeps it out of `-k "not mlflow_client"` selections that avoid importing MLflow.
TAG = "hokusai.proxy-check"


def test_mlflow_client_deletes_through_proxy(hokusai_mlflow_client, hokusai_run):
    from ..canary import CANARY_SOURCE, canary_name, ensure_registered_model, remove_registration

    client = hokusai_mlflow_client
    name = canary_name("proxy")
    version = None
    created = False
    deleted = {"version": False, "model": False}

    def step(what, call):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the failing step, named, with MLflow's own message
            pytest.fail(f"{what} through the tracking URI failed: {' '.join(str(exc).split())[:400]}",
                        pytrace=False)

    try:
        created = step("create_registered_model", lambda: ensure_registered_model(client, name))
        version = str(step("create_model_version", lambda: client.create_model_version(
            name, source=CANARY_SOURCE, await_creation_for=0)).version)
        step("set_registered_model_tag", lambda: client.set_registered_model_tag(name, TAG, "set"))
        assert TAG in client.get_registered_model(name).tags, "the tag just set is not on the model"
        step("delete_registered_model_tag (DELETE registered-models/delete-tag)",
             lambda: client.delete_registered_model_tag(name, TAG))
        assert TAG not in client.get_registered_model(name).tags, "the deleted tag is still on the model"
        step("delete_model_version (DELETE model-versions/delete)", lambda: client.delete_model_version(name, version))
        deleted["version"] = True
        assert version not in {str(v.version) for v in client.search_model_versions(f"name='{name}'")}, (
            f"version {version} of {name} is still listed after its delete")
        step("delete_registered_model (DELETE registered-models/delete)", lambda: client.delete_registered_model(name))
        deleted["model"] = True
        assert not client.search_registered_models(filter_string=f"name='{name}'"), (
            f"{name} is still listed after its delete")
    finally:
        if not deleted["model"]:
            keep_leftovers(hokusai_run, remove_registration(
                client, model=name, versions=[version] if version and not deleted["version"] else [],
                model_created=created or deleted["version"]))
