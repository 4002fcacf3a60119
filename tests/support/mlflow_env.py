"""A cached virtualenv with one MLflow version, for the stack's MLflow server ("another environment").

The platform runs MLflow 3.9.0 (contract section 5) while third parties use the newest client; the
tests pair the two by running the stack's server from such an environment
(``start_stack(mlflow_python=...)``, ``--hokusai-stack-mlflow-python``). Building one takes a few
minutes, so it is built once and kept under ``$HOKUSAI_TEST_CACHE`` (default
``~/.cache/pytest-hokusai``) in a folder keyed by the MLflow version and the Python version;
a ``.complete`` marker is written last, and a file lock keeps parallel builders (xdist, two CI
steps) from racing. Build from the command line (CI does this before its MLflow 3.9.0 step)::

    python -m tests.support.mlflow_env 3.9.0      # prints the environment's python
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["PLATFORM_MLFLOW", "cache_root", "mlflow_server_python"]

#: The platform's MLflow server version (contract section 5).
PLATFORM_MLFLOW = "3.9.0"
_BUILD_TIMEOUT_S = 1200


def cache_root() -> Path:
    return Path(os.environ.get("HOKUSAI_TEST_CACHE") or Path.home() / ".cache" / "pytest-hokusai")


def _env_dir(version: str) -> Path:
    return cache_root() / f"mlflow-server-{version}-py{sys.version_info[0]}.{sys.version_info[1]}"


def _requirements(version: str) -> list[str]:
    # psycopg2: a stack on PostgreSQL hands its server a postgresql+psycopg2:// URL, which the server's
    # own environment must be able to open (tests/integration/test_stack_postgres.py).
    return [f"mlflow=={version}", "psycopg2-binary>=2.9"]


def mlflow_server_python(version: str = PLATFORM_MLFLOW) -> Path:
    """The python of a virtualenv holding ``mlflow==version`` (built on first use, then reused).

    The ``.complete`` marker holds the requirement list; an environment built with another list gets
    the missing requirements installed on its next use instead of a rebuild.
    """
    from filelock import FileLock

    env_dir = _env_dir(version)
    python = env_dir / "bin" / "python"
    marker = env_dir / ".complete"
    wanted = " ".join(_requirements(version)) + "\n"

    def complete() -> bool:
        return python.exists() and marker.exists() and marker.read_text() == wanted

    if complete():
        return python
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(env_dir) + ".lock", timeout=_BUILD_TIMEOUT_S):
        if complete():
            return python
        if not (python.exists() and marker.exists()):
            shutil.rmtree(env_dir, ignore_errors=True)  # a half-built one from an interrupted run
            subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *_requirements(version)],
                       check=True, timeout=_BUILD_TIMEOUT_S)
        marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(mlflow_server_python(sys.argv[1] if len(sys.argv) > 1 else PLATFORM_MLFLOW))
