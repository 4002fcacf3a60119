"""Is the ``[stack]`` extra installed? (Checked without importing any of it.)

The core install (``pip install pytest-hokusai``) gates a remote deployment; the local stack's parts
(the MLflow server, FastAPI, uvicorn, httpx, SQLAlchemy, filelock) come with
``pip install 'pytest-hokusai[stack]'``. ``--hokusai-target=local`` and ``hokusai-stack up`` call
:func:`missing_stack_parts` first, so a core install gets a usage error naming the install line
instead of an ImportError from a child process.
"""

from __future__ import annotations

from importlib import metadata
from importlib.util import find_spec

__all__ = ["STACK_INSTALL", "STACK_MODULES", "missing_stack_parts", "stack_extra_problem"]

STACK_INSTALL = "pip install 'pytest-hokusai[stack]'"
#: import name -> distribution, for what the auth and API services import
STACK_MODULES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "httpx": "httpx",
    "sqlalchemy": "sqlalchemy",
    "filelock": "filelock",
}


def missing_stack_parts(*, server_elsewhere: bool = False) -> list[str]:
    """Distributions of the ``[stack]`` extra that are not installed here.

    The full ``mlflow`` (its server) is needed here only when the MLflow server does not run from
    another environment (``server_elsewhere``: ``--hokusai-stack-mlflow-python`` or
    ``hokusai-stack up --mlflow-python`` / ``HOKUSAI_STACK_MLFLOW_PYTHON`` is set).
    """
    missing = [dist for module, dist in STACK_MODULES.items() if find_spec(module) is None]
    if not server_elsewhere:
        try:
            metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            missing.insert(0, "mlflow (the server; mlflow-skinny is the client only)")
    return missing


def stack_extra_problem(what: str, *, server_elsewhere: bool = False) -> str | None:
    """A usage-error message for ``what`` (e.g. ``--hokusai-target=local``), or None when it can run."""
    missing = missing_stack_parts(server_elsewhere=server_elsewhere)
    if not missing:
        return None
    return (f"{what} needs the local stack's parts, which this install lacks ({', '.join(missing)}): "
            f"{STACK_INSTALL}. A gate against a remote deployment needs none of them "
            "(--hokusai-target=remote).")
