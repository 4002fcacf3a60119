"""The auth service, called directly: health, key validation in both styles, the contract."""

from __future__ import annotations

import pytest

from ..auth import check_validation_result
from ._support import HOST_SAFE_FILTERS, describe

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_auth, *HOST_SAFE_FILTERS]

SERVICE_IDS = ["omitted", "configured"]


def test_auth_service_health(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("GET", hokusai_settings.auth_url + "/health", label="check:auth-health")
    assert result.exchange.status == 200, f"auth /health is not 200: {describe(result)}"
    assert isinstance(result.json, dict), f"auth /health did not answer a JSON object: {describe(result)}"


@pytest.mark.parametrize("style", ["header", "body"])
@pytest.mark.parametrize("service", SERVICE_IDS)
def test_key_validates(hokusai_auth_client, hokusai_api_key, hokusai_settings, style, service):
    service_id = None if service == "omitted" else hokusai_settings.service_id
    outcome = hokusai_auth_client.validate(hokusai_api_key, style=style, service_id=service_id)
    assert outcome.status == 200, (
        f"the auth service rejected the key in {style} style with service_id "
        f"{service_id or '(omitted)'}: {outcome.exchange.summary()}"
    )
    assert outcome.result.get("is_valid") is True, f"200 without is_valid true: {outcome.exchange.summary()}"


def test_validation_result_matches_contract(hokusai_auth_client, hokusai_api_key, hokusai_settings):
    outcome = hokusai_auth_client.validate(hokusai_api_key, style="header", service_id=hokusai_settings.service_id)
    assert outcome.status == 200, outcome.exchange.summary()
    problems = check_validation_result(outcome.result)
    assert not problems, f"ValidationResult breaks the contract: {problems}"
    assert outcome.result.get("service_id") in (None, hokusai_settings.service_id), (
        f"the key is registered for {outcome.result.get('service_id')!r}, not {hokusai_settings.service_id!r}"
    )


def test_validate_rejects_malformed_body_with_422(hokusai_session, hokusai_settings):
    result = hokusai_session.probe("POST", hokusai_settings.auth_url + "/api/v1/keys/validate",
                                   json={"api_key": ["not", "a", "string"]}, key=None,
                                   label="check:auth-422")
    assert result.exchange.status == 422, f"a malformed validate body must give 422: {describe(result)}"
    detail = result.json.get("detail") if isinstance(result.json, dict) else None
    assert isinstance(detail, list) and detail and {"loc", "msg", "type"} <= set(detail[0]), (
        f"422 body is not FastAPI's validation error shape: {describe(result)}"
    )
