"""Which MLflow client is installed, and whether the checks support it (read from package metadata,
never by importing mlflow, which costs seconds).

Supported: every client from 3.9 (the platform's server version, contract section 5) on, with no
upper bound: the checks use the stable client API (``log_model(name=...)``, the model registry,
``models:/`` URIs) and CI runs them on 3.9.0 and on the newest release. The core install brings
``mlflow-skinny`` (the client without the server); a full ``mlflow`` install is the same client.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = ["MIN_MLFLOW", "SUPPORTED_RANGE", "mlflow_client_version", "mlflow_version_problem"]

#: The oldest MLflow client the checks support: the platform's server version.
MIN_MLFLOW = (3, 9)
SUPPORTED_RANGE = "3.9 or newer (from 3.9.0, the platform's server version, to the newest release)"
_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")  # the full client first: it pins mlflow-skinny to its own version


def mlflow_client_version() -> str | None:
    """The installed MLflow client's version (``mlflow``, else ``mlflow-skinny``), or None."""
    for dist in _DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def mlflow_version_problem() -> str | None:
    """A usage-error message when the installed client is missing or outside the supported range."""
    version = mlflow_client_version()
    if version is None:
        return ("no MLflow client is installed; install pytest-hokusai with its dependencies "
                "(pip install pytest-hokusai brings mlflow-skinny)")
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        return None  # an unreadable (e.g. source-built) version: let the checks tell
    if (int(match.group(1)), int(match.group(2))) < MIN_MLFLOW:
        return (f"the installed MLflow client {version} is not supported: pytest-hokusai supports MLflow "
                f"{SUPPORTED_RANGE}; upgrade it, e.g. pip install -U 'mlflow-skinny>=3.9' "
                "(or 'mlflow>=3.9' with the server)")
    return None
