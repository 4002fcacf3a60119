"""The package's own ValidationResult schema agrees with the auth service's published spec.

The spec lives in ``../shared/contract/auth_openapi.json`` beside the checkout (reference data,
never copied into the project); without it this test skips and says where it looked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_hokusai.auth import VALIDATION_RESULT_SCHEMA, check_validation_result

SPEC = Path(__file__).resolve().parents[3] / "shared" / "contract" / "auth_openapi.json"


def _spec_types(prop: dict) -> set[str]:
    variants = prop.get("anyOf", [prop])
    return {v["type"] for v in variants if "type" in v}


def _our_types(prop: dict) -> set[str]:
    t = prop["type"]
    return set(t) if isinstance(t, list) else {t}


@pytest.fixture(scope="module")
def spec_schema() -> dict:
    if not SPEC.is_file():
        pytest.skip(f"the platform's published spec is not at {SPEC} (it sits in ../shared beside the checkout)")
    return json.loads(SPEC.read_text(encoding="utf-8"))["components"]["schemas"]["ValidationResult"]


def test_same_fields_and_required(spec_schema):
    assert set(VALIDATION_RESULT_SCHEMA["properties"]) == set(spec_schema["properties"])
    assert set(VALIDATION_RESULT_SCHEMA["required"]) == set(spec_schema["required"])


def test_same_types_per_field(spec_schema):
    for name, prop in spec_schema["properties"].items():
        assert _our_types(VALIDATION_RESULT_SCHEMA["properties"][name]) == _spec_types(prop), name


def test_checker_accepts_a_spec_example_and_rejects_wrong_types():
    good = {"is_valid": True, "key_id": "k", "user_id": "u", "service_id": "platform", "scopes": ["read"],
            "rate_limit_per_hour": 1000, "billing_plan": "free", "monthly_prediction_limit": None,
            "error": None, "email": "extra fields are allowed"}
    assert check_validation_result(good) == []
    assert check_validation_result({"key_id": "k"})  # is_valid missing
    assert check_validation_result({"is_valid": "yes"})
    assert check_validation_result({"is_valid": True, "rate_limit_per_hour": True})  # bool is not an int
