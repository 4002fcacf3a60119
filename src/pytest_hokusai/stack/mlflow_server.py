"""The stack's MLflow server: a real ``mlflow server`` subprocess, configured like the platform's.

Like the platform (contract sections 1, 5 and 9) it runs with ``--static-prefix /mlflow`` and
``--serve-artifacts``. With MLflow <= 3.11 that puts the UI, ``/mlflow/health`` and
``/mlflow/ajax-api/2.0/...`` under the prefix while the REST API stays at unprefixed
``/api/2.0/mlflow/...`` (checked against 3.11.1 by ``tests/integration/test_stack.py``).

Startup cost: by default MLflow 3.x starts a job-execution subsystem and 4 workers (about eleven
processes, 1.5 GB, 20+ s). With ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and one worker it is
two processes (the ``mlflow`` CLI and one uvicorn worker) and about 8 s on two cores.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .process import ManagedProcess, http_ok, minimal_env

__all__ = [
    "STATIC_PREFIX",
    "mlflow_command",
    "mlflow_env",
    "mlflow_ready_check",
    "start_mlflow",
]

#: The platform's MLflow static prefix (``mlflow server --static-prefix /mlflow``).
STATIC_PREFIX = "/mlflow"


def default_backend_store_uri(data_dir: Path) -> str:
    """SQLite file ``mlflow.db`` in the data dir (an absolute path: four slashes)."""
    return f"sqlite:///{(Path(data_dir) / 'mlflow.db').resolve()}"


def mlflow_command(
    *,
    port: int,
    data_dir: Path,
    backend_store_uri: str | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
) -> list[str]:
    """The ``mlflow server`` argv: this interpreter's MLflow, one worker, static prefix, artifacts.

    ``backend_store_uri`` is any SQLAlchemy URL (``postgresql://...``); default SQLite in
    ``data_dir``. Artifacts go to ``data_dir/artifacts``, served through the tracking server.
    The allowed Host headers are the server's own address with its port, as on the platform, so
    a proxy that forwards another Host gets MLflow's 403 ``Invalid Host header``.
    """
    data_dir = Path(data_dir).resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--static-prefix", STATIC_PREFIX,
        "--serve-artifacts",
        "--artifacts-destination", str(data_dir / "artifacts"),
        "--backend-store-uri", backend_store_uri or default_backend_store_uri(data_dir),
        "--allowed-hosts", f"{host}:{port},localhost:{port}",
    ]


def mlflow_env() -> dict[str, str]:
    """Minimal env for the server: no ``MLFLOW_*`` from the caller, job execution off."""
    return minimal_env({
        # With job execution on, MLflow 3.x starts huey consumers and extra workers.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # Quieter logs; keep warnings so a failing start shows its reason in the log tail.
        "MLFLOW_LOGGING_LEVEL": "WARNING",
    })


def mlflow_ready_check(url: str, timeout: float = 2.0) -> Callable[[], bool]:
    """A probe: ``GET {url}/mlflow/health`` answers 200."""
    health = url.rstrip("/") + STATIC_PREFIX + "/health"
    return lambda: http_ok(health, timeout=timeout)


def start_mlflow(
    *,
    port: int,
    data_dir: Path,
    backend_store_uri: str | None = None,
    name: str = "MLflow",
) -> ManagedProcess:
    """Start (not wait for) the MLflow server; its log is ``data_dir/logs/mlflow.log``."""
    data_dir = Path(data_dir)
    (data_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(
        name,
        mlflow_command(port=port, data_dir=data_dir, backend_store_uri=backend_store_uri),
        log_path=data_dir / "logs" / "mlflow.log",
        env=mlflow_env(),
        cwd=data_dir,
    )
    return proc.start()
