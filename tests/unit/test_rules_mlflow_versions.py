"""Diagnosis tells that must hold on every supported MLflow server version (3.9 to the newest)."""

from __future__ import annotations

from pytest_hokusai.diagnosis import diagnose

from .test_diagnosis_rules import BEARER, REST, healthy, s_path_mismatch, x

#: MLflow >= 3.1x's entity-level 404: besides error_code it carries sqlstate and error_class, and the
#: error_class is "RESOURCE_NOT_FOUND" (seen from 3.17.2; 3.9.0 sends error_code and message only).
NEW_NOT_FOUND = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=m not found",
                 "sqlstate": "KAM00", "error_class": "RESOURCE_NOT_FOUND"}


def test_a_missing_model_on_a_newer_mlflow_is_no_path_mismatch() -> None:
    """A registration that failed before its model existed leaves a registered-models/get 404 behind;
    on MLflow >= 3.1x its body mentions RESOURCE_NOT_FOUND (error_class), but MLflow found the route."""
    e = healthy()
    e.add_exchanges([x("GET", REST + "/registered-models/get?name=m", 404, NEW_NOT_FOUND, auth=BEARER)])
    assert diagnose(e) == []


def test_the_proxys_resource_not_found_is_still_a_path_mismatch() -> None:
    """The proxy's translated HTML 404 (error_code RESOURCE_NOT_FOUND) keeps its meaning, in either
    JSON spelling (FastAPI's compact one, or with spaces)."""
    assert [f.code for f in diagnose(s_path_mismatch())][:1] == ["MLFLOW_PATH_MISMATCH"]
    compact = '{"error_code":"RESOURCE_NOT_FOUND","message":"The requested resource was not found: runs/get"}'
    e = healthy()
    e.add_exchanges([x("GET", REST + "/runs/get?run_id=1", 404, compact, ctype="application/json", auth=BEARER)])
    assert [f.code for f in diagnose(e)] == ["MLFLOW_PATH_MISMATCH"]
