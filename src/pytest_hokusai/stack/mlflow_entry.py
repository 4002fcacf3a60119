"""Run ``mlflow server`` in one process: the CLI's own set-up, then its uvicorn worker in-process.

The stack runs this file by path with the *server's* Python (``[python, mlflow_entry.py, <mlflow
server options>]``), which may be another environment without pytest_hokusai, so it imports only the
standard library, mlflow and uvicorn.

Why: ``mlflow server`` imports ``mlflow.server`` (seconds), initialises the backend stores, then
spawns ``python -m uvicorn ... mlflow.server.fastapi_app:app``, which imports it all again. Here:

1. the variables the CLI will hand its worker are set *before* ``mlflow.server`` is imported (it
   reads some of them at import time: the security middleware, ``is_running_as_server``);
2. they are unset again and MLflow's own ``server`` command runs in this process, unchanged (it
   validates the options, sets its variables, initialises the stores synchronously, builds the
   uvicorn command), except that its ``_exec_cmd`` - the spawn of the worker - is replaced;
3. that replacement checks that the worker's environment (every ``MLFLOW*`` / ``_MLFLOW*``
   variable) equals what was set before the import, and that the command is one uvicorn worker
   of ``mlflow.server.fastapi_app:app``; then it runs uvicorn's own command line in this process
   with exactly that command's options.

If anything differs (an MLflow version that sets other variables or launches otherwise), nothing
is served from here: this process becomes the plain ``mlflow server`` (``os.execve``) and says why
in its log. So a server is never configured differently from what the CLI would do. One line
starting with :data:`REPORT_MARK` in the log says which way it went (JSON: ``mode``, and for
``direct`` the uvicorn options and the MLflow variables, URI passwords masked).

``--hokusai-sqlite-template PATH`` (first, optional): after the stores were created in a fresh
SQLite file, save a copy of that migrated, empty database at ``PATH`` (written beside it, then
renamed into place, so no reader ever sees half a file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

REPORT_MARK = "hokusai-mlflow-entry: "
TEMPLATE_OPTION = "--hokusai-sqlite-template"
APP = "mlflow.server.fastapi_app:app"
#: Set by MLflow itself with a new random value in every process or boot; compared by presence only.
PER_BOOT = frozenset({"_MLFLOW_TELEMETRY_SESSION_ID", "_MLFLOW_SERVER_BOOT_ID"})


def is_mlflow_variable(name: str) -> bool:
    return name.startswith(("MLFLOW", "_MLFLOW"))


def mlflow_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if is_mlflow_variable(k)}


def _version(text: str) -> tuple[int, int]:
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (10**6, 0)


_OPTIONS = ("host", "port", "static_prefix", "artifacts_destination", "backend_store_uri", "allowed_hosts")


def _parser() -> argparse.ArgumentParser:
    # The options the stack passes (stack/mlflow_server.py, mlflow_command); any other -> the CLI.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in _OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"))
    parser.add_argument("--workers", default="1")
    parser.add_argument("--serve-artifacts", action="store_true")
    return parser


def expected_worker_env(options: argparse.Namespace, mlflow_version: str) -> dict[str, str]:
    """The ``MLFLOW*`` variables ``mlflow server`` gives its uvicorn worker for these options, as
    far as this file knows (read in MLflow 3.9.0, 3.11.1 and 3.17.2: ``cli.server`` and
    ``server._run_server``); the variables MLflow draws at random each start are not in it.
    Whatever it gets wrong, :func:`main` finds before serving (and runs the CLI instead)."""
    store = options.backend_store_uri
    env = {
        # cli.server -> _run_server's env_map
        "_MLFLOW_SERVER_FILE_STORE": store,
        "_MLFLOW_SERVER_REGISTRY_STORE": store,  # no --registry-store-uri: the backend store
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",  # --serve-artifacts, no default root
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": options.artifacts_destination,
        "_MLFLOW_STATIC_PREFIX": options.static_prefix,
        "_MLFLOW_SGI_NAME": "uvicorn",
        "MLFLOW_SERVER_SECRETS_CACHE_TTL": "60",  # the CLI's defaults
        "MLFLOW_SERVER_SECRETS_CACHE_MAX_SIZE": "1000",
        # cli.server's os.environ
        "MLFLOW_SERVER_ALLOWED_HOSTS": options.allowed_hosts,
        "MLFLOW_SERVER_X_FRAME_OPTIONS": "SAMEORIGIN",
        # initialize_backend_stores
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_REGISTRY_URI": store,
    }
    if options.serve_artifacts:
        env["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    version = _version(mlflow_version)
    if version >= (3, 11):
        env["MLFLOW_ENABLE_WORKSPACES"] = "false"
    if version >= (3, 17):
        env["_MLFLOW_IN_JOB_EXECUTOR"] = "false"
    return env


def env_differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What differs between two environments' ``MLFLOW*`` variables (per-boot ones by presence)."""
    expected, actual = mlflow_variables(expected), mlflow_variables(actual)
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name in PER_BOOT:
            continue
        if name not in actual:
            problems.append(f"{name} not set by MLflow")
        elif name not in expected:
            problems.append(f"{name}={mask(actual[name])!r} set by MLflow, not known here")
        elif expected[name] != actual[name]:
            problems.append(f"{name}: MLflow sets {mask(actual[name])!r}, not {mask(expected[name])!r}")
    return problems


def command_problems(command: Sequence[str], options: argparse.Namespace) -> list[str]:
    """Why ``command`` (the worker the CLI would spawn) is not one uvicorn worker of the app."""
    argv = list(command)
    if argv[1:3] != ["-m", "uvicorn"] or not argv or argv[-1] != APP:
        return [f"the CLI would run {argv[:3]} ... {argv[-1:]}, not uvicorn with {APP}"]
    problems = []
    for flag, wanted in (("--host", options.host), ("--port", options.port), ("--workers", "1")):
        if flag not in argv or argv[argv.index(flag) + 1] != str(wanted):
            problems.append(f"uvicorn {flag} is not {wanted}")
    problems += [f"uvicorn {flag}" for flag in ("--reload", "--env-file", "--factory", "--uds", "--fd")
                 if flag in argv]
    return problems


def mask(value: str) -> str:
    """A URI's password as ``***`` (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", value)


def report(**fields: Any) -> None:
    print(REPORT_MARK + json.dumps(fields, sort_keys=True), flush=True)


def sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///`` URI (None for anything else, in-memory included)."""
    match = re.match(r"sqlite:///(.+)$", uri)
    return match.group(1) if match and match.group(1) != ":memory:" else None


def save_template(database: str, template: str) -> None:
    """Copy the SQLite ``database`` to ``template`` atomically (a consistent snapshot, renamed)."""
    os.makedirs(os.path.dirname(template) or ".", exist_ok=True)
    partial = f"{template}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        with sqlite3.connect(database) as source, sqlite3.connect(partial) as target:
            source.backup(target)
        source.close()
        target.close()
        os.replace(partial, template)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def run_cli_instead(server_args: Sequence[str], env: Mapping[str, str], reason: str) -> NoReturn:
    """Become ``python -m mlflow server <server_args>`` with the environment this process got."""
    report(mode="cli", reason=reason)
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "server", *server_args], dict(env))


class _Fallback(Exception):
    pass


class _Finished:
    """Stands for the worker process ``_run_server`` waits for: it has already run here."""

    def __init__(self, code: int) -> None:
        self.returncode = code
        self.pid = os.getpid()

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def poll(self) -> int:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # Run by path, sys.path[0] is this file's folder (the stack's modules, e.g. config.py): put the
    # working directory there instead, as `python -m uvicorn` has it.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path[0] = os.getcwd()
    template = None
    if args[:1] == [TEMPLATE_OPTION]:
        template, args = args[1], args[2:]
    given_env = dict(os.environ)
    options, unknown = _parser().parse_known_args(args)
    if unknown:
        run_cli_instead(args, given_env, f"options this entry does not know: {unknown}")
    missing = [name for name in _OPTIONS if getattr(options, name) is None]
    if missing:
        run_cli_instead(args, given_env, f"options this entry needs are not given: {missing}")
    from importlib.metadata import version

    mlflow_version = version("mlflow")
    expected = expected_worker_env(options, mlflow_version)
    database = sqlite_path(options.backend_store_uri)
    fresh_database = database is not None and not os.path.exists(database)

    # uvicorn first, as in the worker (mlflow.server counts "uvicorn" in sys.modules as serving)
    import uvicorn
    from uvicorn.main import main as uvicorn_command

    os.environ.update(expected)
    import mlflow.cli
    import mlflow.server

    at_import = dict(os.environ)
    for name in expected:  # MLflow's own `server` command sets them now, as in the CLI process
        if name in given_env:
            os.environ[name] = given_env[name]
        else:
            os.environ.pop(name, None)
    if not callable(getattr(mlflow.server, "_exec_cmd", None)):
        run_cli_instead(args, given_env, f"MLflow {mlflow_version} has no mlflow.server._exec_cmd")

    def run_worker_here(command: Sequence[str], *, extra_env: Mapping[str, str] | None = None,
                        **_kwargs: Any) -> _Finished:
        worker_env = {**os.environ, **(extra_env or {})}
        problems = env_differences(at_import, worker_env) + command_problems(command, options)
        if problems:
            raise _Fallback("; ".join(problems))
        os.environ.update(worker_env)
        if template and fresh_database and database:
            try:
                save_template(database, template)
            except (OSError, sqlite3.Error) as exc:
                report(mode="template", saved=False, reason=str(exc))
        uvicorn_args = list(command)[3:]
        report(mode="direct", mlflow=mlflow_version, uvicorn=uvicorn_args, uvicorn_version=uvicorn.__version__,
               env={k: mask(v) for k, v in sorted(mlflow_variables(os.environ).items())})
        try:
            uvicorn_command.main(args=uvicorn_args, prog_name="python -m uvicorn", standalone_mode=False)
        except SystemExit as exc:
            return _Finished(exc.code if isinstance(exc.code, int) else 1)
        return _Finished(0)

    mlflow.server._exec_cmd = run_worker_here  # type: ignore[attr-defined,assignment]
    try:
        mlflow.cli.cli.main(args=["server", *args], prog_name="mlflow", standalone_mode=False)
    except _Fallback as exc:
        run_cli_instead(args, given_env, f"MLflow {mlflow_version} configures its worker otherwise: {exc}")


if __name__ == "__main__":
    main()
