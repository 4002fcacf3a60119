"""The stack's MLflow server: a real ``mlflow server`` subprocess, configured like the platform's.

Like the platform (contract sections 1, 5 and 9) it runs with ``--static-prefix /mlflow`` and
``--serve-artifacts``. With MLflow <= 3.11 that puts the UI, ``/mlflow/health`` and
``/mlflow/ajax-api/2.0/...`` under the prefix while the REST API stays at unprefixed
``/api/2.0/mlflow/...``. From 3.12 on, MLflow prefixes the REST routes too
(``/mlflow/api/2.0/mlflow/...``; contract section 1, "Path translation"). The stack keeps the
platform's URL layout either way: the API service's proxy target (the platform's
``MLFLOW_SERVER_URL``) is the MLflow root for <= 3.11 and ``root + /mlflow`` for >= 3.12
(:attr:`ServerPython.rest_prefix`), while the balancer's direct ``/mlflow`` route always goes to
the root with the path unchanged. ``tests/integration/test_stack.py`` checks both layouts.

The server can run from another Python environment (:func:`find_server_python`; the
``HOKUSAI_STACK_MLFLOW_PYTHON`` variable, ``hokusai-stack up --mlflow-python``,
``start_stack(mlflow_python=...)``, ``--hokusai-stack-mlflow-python``), so that the user's MLflow
client can be paired with the platform's server version (3.9.0) whatever client is installed.

Startup cost: by default MLflow 3.x starts a job-execution subsystem and 4 workers (about eleven
processes, 1.5 GB, 20+ s). With ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and one worker it is
two processes (the ``mlflow`` CLI and one uvicorn worker), each importing ``mlflow.server`` (about
5 s on two quiet cores). By default the stack runs :mod:`.mlflow_entry` instead (``launch="direct"``):
MLflow's own ``server`` command and its uvicorn worker in one process, one import, the same
configuration (the entry checks it, and becomes the plain CLI when it differs), about 3.5 s; and a
fresh SQLite store starts from a migrated template (:mod:`.mlflow_template`).
``HOKUSAI_STACK_MLFLOW_LAUNCH=cli`` runs ``python -m mlflow server`` as before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import StackError
from .extra import STACK_INSTALL
from .mlflow_template import prepare_database
from .process import ManagedProcess, http_ok, minimal_env

__all__ = [
    "ENTRY_SCRIPT",
    "LAUNCH_ENV",
    "LAUNCH_MODES",
    "REST_PREFIXED_SINCE",
    "SERVER_PYTHON_ENV",
    "STATIC_PREFIX",
    "ServerPython",
    "find_server_python",
    "launch_mode",
    "mlflow_command",
    "mlflow_env",
    "mlflow_ready_check",
    "mlflow_server_options",
    "rest_prefix_for",
    "start_mlflow",
]

#: The platform's MLflow static prefix (``mlflow server --static-prefix /mlflow``).
STATIC_PREFIX = "/mlflow"
#: The first MLflow whose ``--static-prefix`` also prefixes the REST routes (checked in the wheels).
REST_PREFIXED_SINCE = (3, 12)
#: The Python whose ``mlflow server`` the stack runs (default: this interpreter).
SERVER_PYTHON_ENV = "HOKUSAI_STACK_MLFLOW_PYTHON"
#: How the stack starts MLflow: ``direct`` (default, :data:`ENTRY_SCRIPT`) or ``cli`` (``mlflow server``).
LAUNCH_ENV = "HOKUSAI_STACK_MLFLOW_LAUNCH"
LAUNCH_MODES = ("direct", "cli")
#: Run by path with the server's Python, which need not have pytest_hokusai installed.
ENTRY_SCRIPT = Path(__file__).resolve().with_name("mlflow_entry.py")
_PROBE_TIMEOUT_S = 60.0
# Run by the other environment's interpreter: the version of its *full* MLflow (mlflow-skinny
# alone has no server), without importing mlflow (seconds).
_VERSION_SCRIPT = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('mlflow'))\n"
    "except m.PackageNotFoundError:\n    print('')\n"
)


def _version_tuple(version: str) -> tuple[int, int]:
    """``"3.12.0rc1"`` -> ``(3, 12)``; an unreadable version counts as the newest layout."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (sys.maxsize, 0)


def rest_prefix_for(version: str) -> str:
    """Where MLflow ``version`` serves ``api/2.0/...`` under ``--static-prefix /mlflow``:
    ``""`` (the root) up to 3.11, ``"/mlflow"`` from 3.12 on."""
    return STATIC_PREFIX if _version_tuple(version) >= REST_PREFIXED_SINCE else ""


@dataclass(frozen=True)
class ServerPython:
    """The interpreter that runs ``mlflow server`` and the MLflow version installed there."""

    executable: str
    version: str
    external: bool = False  #: another environment than the one running the stack

    @property
    def rest_prefix(self) -> str:
        """``""`` or ``"/mlflow"``: see :func:`rest_prefix_for`."""
        return rest_prefix_for(self.version)


def find_server_python(python: str | Path | None = None) -> ServerPython:
    """The interpreter for the MLflow server: ``python``, else ``$HOKUSAI_STACK_MLFLOW_PYTHON``,
    else this one; with the MLflow version installed there.

    Raises :class:`StackError` naming the fix when that interpreter is missing or has no MLflow
    server (``mlflow-skinny`` alone, as in the core install, has none).
    """
    chosen = str(python) if python else os.environ.get(SERVER_PYTHON_ENV, "").strip()
    if not chosen:
        try:
            version = metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            raise StackError(
                "the MLflow server is not installed in this environment (the core install has only the "
                f"MLflow client): {STACK_INSTALL}, or run the server from another environment with "
                f"{SERVER_PYTHON_ENV}=/path/to/that/env/bin/python (hokusai-stack up --mlflow-python, "
                "--hokusai-stack-mlflow-python)"
            ) from None
        return ServerPython(sys.executable, version)
    path = Path(chosen).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(f"the MLflow server's Python {str(path)!r} is not an executable file; give the path "
                         "of a python in an environment with MLflow installed (e.g. /opt/mlflow-3.9/bin/python)")
    try:
        done = subprocess.run([str(path), "-c", _VERSION_SCRIPT], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, env=_server_env(external=True), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"the MLflow server's Python {str(path)!r} could not be run: {exc}") from None
    version = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    if not version:
        detail = f" ({done.stderr.strip().splitlines()[-1]})" if done.returncode and done.stderr.strip() else ""
        raise StackError(f"the Python {str(path)!r} has no MLflow server installed{detail}; install it there "
                         f"with {path} -m pip install 'mlflow>=3.9'")
    return ServerPython(str(path), version, external=True)


def default_backend_store_uri(data_dir: Path) -> str:
    """SQLite file ``mlflow.db`` in the data dir (an absolute path: four slashes)."""
    return f"sqlite:///{(Path(data_dir) / 'mlflow.db').resolve()}"


def launch_mode(launch: str | None = None) -> str:
    """``launch``, else ``$HOKUSAI_STACK_MLFLOW_LAUNCH``, else ``"direct"``; a clear error otherwise."""
    chosen = (launch or os.environ.get(LAUNCH_ENV, "")).strip().lower() or "direct"
    if chosen not in LAUNCH_MODES:
        raise StackError(f"{LAUNCH_ENV}={chosen!r} is not a launch mode; use one of {', '.join(LAUNCH_MODES)} "
                         "(cli: `python -m mlflow server`, direct: the same server in one process)")
    return chosen


def mlflow_server_options(
    *,
    port: int,
    data_dir: Path,
    backend_store_uri: str | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
) -> list[str]:
    """The ``mlflow server`` options: one worker, static prefix, artifacts, allowed hosts.

    ``backend_store_uri`` is any SQLAlchemy URL (``postgresql://...``); default SQLite in
    ``data_dir``. Artifacts go to ``data_dir/artifacts``, served through the tracking server.
    The allowed Host headers are the server's own address with its port, as on the platform, so
    a proxy that forwards another Host gets MLflow's 403 ``Invalid Host header``.
    """
    data_dir = Path(data_dir).resolve()
    return [
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--static-prefix", STATIC_PREFIX,
        "--serve-artifacts",
        "--artifacts-destination", str(data_dir / "artifacts"),
        "--backend-store-uri", backend_store_uri or default_backend_store_uri(data_dir),
        "--allowed-hosts", f"{host}:{port},localhost:{port}",
    ]


def mlflow_command(
    *,
    port: int,
    data_dir: Path,
    backend_store_uri: str | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    python: str | None = None,
    launch: str = "cli",
    entry_args: Sequence[str] = (),
) -> list[str]:
    """The server's argv with ``python`` (default this interpreter) and :func:`mlflow_server_options`:
    ``python -m mlflow server ...`` (``launch="cli"``) or ``python mlflow_entry.py [entry_args] ...``
    (``launch="direct"``, see :mod:`.mlflow_entry`)."""
    options = mlflow_server_options(port=port, data_dir=data_dir, backend_store_uri=backend_store_uri,
                                    host=host, workers=workers)
    if launch_mode(launch) == "direct":
        return [python or sys.executable, str(ENTRY_SCRIPT), *entry_args, *options]
    return [python or sys.executable, "-m", "mlflow", "server", *options]


def mlflow_env(*, external: bool = False) -> dict[str, str]:
    """Minimal env for the server: no ``MLFLOW_*`` from the caller, job execution off.

    ``external``: the server runs from another environment, which must not see this one's
    ``PYTHONPATH`` or ``VIRTUAL_ENV``.
    """
    return _server_env(external=external)


def _server_env(*, external: bool) -> dict[str, str]:
    env = minimal_env({
        # With job execution on, MLflow 3.x starts huey consumers and extra workers.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # Quieter logs; keep warnings so a failing start shows its reason in the log tail.
        "MLFLOW_LOGGING_LEVEL": "WARNING",
    })
    if external:
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    return env


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
    server: ServerPython | None = None,
    launch: str | None = None,
) -> ManagedProcess:
    """Start (not wait for) the MLflow server; its log is ``data_dir/logs/mlflow.log``.

    ``server``: the interpreter to run it with (:func:`find_server_python`; default this one).
    ``launch``: ``"direct"`` or ``"cli"`` (default :func:`launch_mode`). The default SQLite store
    starts from the migrated template when there is one (:mod:`.mlflow_template`).
    """
    data_dir = Path(data_dir)
    (data_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    mode = launch_mode(launch)
    python = server.executable if server else sys.executable
    version = server.version if server else metadata.version("mlflow")
    entry_args = [] if backend_store_uri else prepare_database(data_dir, version, python,
                                                               direct=mode == "direct")
    proc = ManagedProcess(
        name,
        mlflow_command(port=port, data_dir=data_dir, backend_store_uri=backend_store_uri,
                       python=python, launch=mode, entry_args=entry_args),
        log_path=data_dir / "logs" / "mlflow.log",
        env=mlflow_env(external=bool(server and server.external)),
        cwd=data_dir,
    )
    return proc.start()
