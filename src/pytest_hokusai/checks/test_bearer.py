"""How the proxy takes the key: no key, Bearer, ApiKey, X-API-Key, and the stock MLflow client."""

from __future__ import annotations

import pytest

from ._support import HOST_SAFE_FILTERS, describe, json_detail

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_bearer, *HOST_SAFE_FILTERS]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_no_key_is_rejected_with_401(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("GET", hokusai_settings.tracking_uri + SEARCH, key=None,
                                   label="check:proxy-no-key")
    assert result.exchange.status == 401, f"the proxy must answer 401 without a key: {describe(result)}"
    assert json_detail(result) == "API key required", f"unexpected 401 body: {describe(result)}"


@pytest.mark.parametrize("style", ["bearer", "apikey", "x-api-key"])
def test_key_is_accepted(hokusai_session, hokusai_settings, style):
    result = hokusai_session.probe("GET", hokusai_settings.tracking_uri + SEARCH, auth_style=style,
                                   label=f"check:proxy-{style}")
    assert result.exchange.status == 200, f"the proxy refused the key sent as {style}: {describe(result)}"
    assert isinstance(result.json, dict), f"expected MLflow JSON: {describe(result)}"


def test_mlflow_client_search_experiments(hokusai_mlflow_client):
    experiments = hokusai_mlflow_client.search_experiments(max_results=5)
    assert isinstance(list(experiments), list)
