"""The toy model a check registers: a small scikit-learn classifier on generated data, and the
explicit pip requirements it is logged with.

numpy, pandas, scikit-learn and mlflow are imported inside :func:`train_toy_model` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["PIP_REQUIREMENTS", "ToyModel", "train_toy_model"]


def _pinned(dist: str, fallback: str) -> str:
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return fallback


#: Explicit requirements for the logged toy model, so ``log_model`` does not infer them (slow, noisy).
PIP_REQUIREMENTS: list[str] = [
    _pinned("scikit-learn", "scikit-learn"),
    _pinned("numpy", "numpy"),
    _pinned("pandas", "pandas"),
    _pinned("cloudpickle", "cloudpickle"),
]

# -- the toy model --------------------------------------------------------------------------------
@dataclass
class ToyModel:
    """A small fitted scikit-learn classifier with its data, predictions and MLflow signature."""

    model: Any  #: sklearn LogisticRegression
    X: Any  #: pandas DataFrame, columns f0..f3
    y: Any  #: numpy int array
    predictions: Any  #: numpy int array, model.predict(X)
    signature: Any  #: mlflow.models.ModelSignature
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def train_toy_model(seed: int = 0, *, rows: int = 64) -> ToyModel:
    """Fit a LogisticRegression on generated data (deterministic for a given ``seed``)."""
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(seed)
    features = rng.normal(size=(rows, 4))
    weights = np.array([1.5, -2.0, 0.5, 1.0])
    y = ((features @ weights + rng.normal(scale=0.5, size=rows)) > 0).astype(np.int64)
    X = pd.DataFrame(features, columns=[f"f{i}" for i in range(4)])
    params = {"C": 1.0, "max_iter": 200}
    model = LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=seed)
    model.fit(X, y)
    predictions = model.predict(X)
    signature = infer_signature(X, predictions)
    accuracy = float((predictions == y).mean())
    return ToyModel(
        model=model, X=X, y=y, predictions=predictions, signature=signature,
        metrics={"accuracy": accuracy, "rows": float(rows)},
        params={"C": str(params["C"]), "max_iter": str(params["max_iter"]), "seed": str(seed),
                "model": "LogisticRegression"},
    )
