"""Registration through the hokusai-ml-platform SDK, when it is installed."""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest

pytestmark = [pytest.mark.live, pytest.mark.hokusai_sdk]

SDK_INSTALL = ('pip install "hokusai-ml-platform[ml] @ git+https://github.com/Hokusai-protocol/'
               'hokusai-data-pipeline.git#subdirectory=hokusai-ml-platform"')
SDK_MISSING_MESSAGE = f"the hokusai-ml-platform SDK is not installed (it is not on PyPI); install it with: {SDK_INSTALL}"
SDK_WRONG_PACKAGE_MESSAGE = (
    "`import hokusai` is the unrelated PyPI package 'hokusai' (Artsy's Docker toolkit), not the Hokusai "
    f"ML platform SDK; uninstall it (pip uninstall hokusai) and install the SDK: {SDK_INSTALL}"
)


def _sdk():
    if importlib.util.find_spec("hokusai") is None:
        pytest.skip(SDK_MISSING_MESSAGE)
    module = importlib.import_module("hokusai")
    if not hasattr(module, "ModelRegistry"):
        pytest.skip(SDK_WRONG_PACKAGE_MESSAGE)
    return module


def test_sdk_registers_without_losing_the_token(hokusai_mlflow_client, hokusai_toy_model, hokusai_unique_name,
                                                hokusai_settings):
    sdk = _sdk()
    token_before = os.environ.get("MLFLOW_TRACKING_TOKEN")
    uri_before = os.environ.get("MLFLOW_TRACKING_URI")
    registry = sdk.ModelRegistry(tracking_uri=hokusai_settings.tracking_uri)
    name = hokusai_unique_name("hokusai-sdk-model")
    try:
        registry.register_baseline(model=hokusai_toy_model.model, model_type="classification", model_name=name)
    finally:
        if not hokusai_settings.keep:
            try:
                hokusai_mlflow_client.delete_registered_model(name)
            except Exception:  # noqa: BLE001 - best effort; the assertion below is what matters
                pass
    assert os.environ.get("MLFLOW_TRACKING_TOKEN") == token_before, (
        "CLIENT_TOKEN_LOST: the SDK removed or changed MLFLOW_TRACKING_TOKEN (F15)"
    )
    assert os.environ.get("MLFLOW_TRACKING_URI") == uri_before, "the SDK changed MLFLOW_TRACKING_URI"
