"""A stand-in for the hokusai SDK as released between 2025-07-16 and 2026-04-18 (contract F15).

Only what the fallback check uses: ``ModelRegistry(tracking_uri=None, api_key=None, api_endpoint=None)``
sets ``MLFLOW_TRACKING_TOKEN`` to the key and probes the remote with ``mlflow.search_experiments()``;
after any remote failure its local fallback removes ``MLFLOW_TRACKING_TOKEN`` / ``_USERNAME`` /
``_PASSWORD`` and points mlflow at ``http://localhost:5001`` (whether or not a key was given, which
``66d077c`` fixed), then tries its client three times. The local probe is left out: whether
something answers on port 5001 changes nothing about what the fallback did to the token.

The e2e test puts this directory first on ``PYTHONPATH``, so ``import hokusai`` finds it instead of
the installed SDK.
"""

from __future__ import annotations

import os

__version__ = "0.0.0+f15-stand-in"
LOCAL_TRACKING_URI = "http://localhost:5001"
_AUTH_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class ModelRegistry:
    def __init__(self, tracking_uri=None, api_key=None, api_endpoint=None, auth=None, **kwargs):
        import mlflow
        from mlflow import MlflowClient

        self.api_key = api_key or os.environ.get("HOKUSAI_API_KEY")
        if not self.api_key:
            raise ValueError("Authentication failed: HOKUSAI_API_KEY is required.")
        self.api_endpoint = api_endpoint or os.environ.get("HOKUSAI_API_ENDPOINT", "https://registry.hokus.ai/api")
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", f"{self.api_endpoint}/mlflow")
        mlflow.set_tracking_uri(self.tracking_uri)
        os.environ["MLFLOW_TRACKING_TOKEN"] = self.api_key
        try:
            mlflow.search_experiments()
        except Exception:  # noqa: BLE001  # as the SDK did: any remote failure
            for name in _AUTH_VARS:  # the F15 bug: the token is gone for every later call
                os.environ.pop(name, None)
            mlflow.set_tracking_uri(LOCAL_TRACKING_URI)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        for _attempt in range(3):  # "Failed to connect to MLflow (attempt n/3)"
            try:
                self.client.search_experiments(max_results=1)
                break
            except Exception:  # noqa: BLE001, S112  # as the SDK did: logged, then created anyway
                continue
