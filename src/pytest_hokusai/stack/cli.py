"""``hokusai-stack``: run the local reference stack in the foreground and manage its keys.

::

    hokusai-stack up [--fault NAME ...] [--data-dir D] [--state-file PATH] ...
    hokusai-stack keys create [--scopes read,write] [--service-id platform] [--admin] [--expires-in-days N]
    hokusai-stack keys list
    hokusai-stack keys revoke KEY_ID_OR_PREFIX
    hokusai-stack faults

``up`` prints the URLs and the key masked, and writes the ``export`` lines (the freshly minted key
in full among them) to an env file only the user can read (0600; ``source`` it in another shell),
and a state file (0600) that the ``keys`` commands read, via ``--state-file`` or
``HOKUSAI_STACK_STATE_FILE``. Both are removed at stop. Ctrl-C or SIGTERM stops everything and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from ..errors import StackError
from .config import POLICIES
from .faults import FAULTS, check_faults

__all__ = ["STATE_FILE_ENV", "build_parser", "main"]

PROG = "hokusai-stack"
STATE_FILE_ENV = "HOKUSAI_STACK_STATE_FILE"
NO_STATE_FILE = (
    "no state file given and none at the default location: pass --state-file PATH or set " + STATE_FILE_ENV
    + " (hokusai-stack up prints both)"
)


class _CliError(Exception):
    """A failure reported as one line on stderr, with exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``hokusai-stack``."""
    parser = argparse.ArgumentParser(prog=PROG, description="The local Hokusai reference stack.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="Start the stack in the foreground (Ctrl-C stops it)")
    up.add_argument("--fault", action="append", default=[], metavar="NAME",
                    help="Fault switch to turn on (repeatable; see 'hokusai-stack faults')")
    up.add_argument("--data-dir", type=Path, metavar="DIR",
                    help="Keep logs, databases and artifacts here (default: a temporary dir, removed at stop)")
    up.add_argument("--backend-store-uri", metavar="URL",
                    help="MLflow backend store (SQLAlchemy URL; default SQLite in the data dir)")
    up.add_argument("--keystore-url", metavar="URL",
                    help="Auth service key store (SQLAlchemy URL; default SQLite in the data dir)")
    up.add_argument("--cache-ttl", type=float, default=60.0, metavar="S",
                    help="Seconds the API service caches a successful key validation (default 60)")
    up.add_argument("--policy", choices=POLICIES, default="write-scope",
                    help="Authorization policy of the MLflow proxy (default write-scope)")
    up.add_argument("--state-file", type=Path, metavar="PATH",
                    help="Where to write the state file for 'keys' and 'pytest --hokusai-target=local' "
                         "(default DATA_DIR/stack.json with --data-dir, else ~/.cache/pytest-hokusai/stack.json)")
    up.add_argument("--startup-timeout", type=float, default=60.0, metavar="S",
                    help="Seconds the whole start may take (default 60)")
    up.add_argument("--env-file", type=Path, metavar="PATH",
                    help="Where to write the export lines, key included, mode 0600 "
                         "(default: hokusai-stack.env next to the state file)")
    up.add_argument("--mlflow-python", metavar="PYTHON",
                    help="Run the MLflow server with this Python (another environment, e.g. one with the "
                    "platform's mlflow==3.9.0; default: env HOKUSAI_STACK_MLFLOW_PYTHON, else this one)")

    keys = sub.add_parser("keys", help="Create, list or revoke keys of a running stack")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="Mint a key and print it")
    create.add_argument("--scopes", default="read,write", metavar="A,B",
                        help="Comma-separated scopes (default read,write)")
    create.add_argument("--service-id", default="platform", choices=("platform", "website", "prediction"),
                        help="Service the key is registered to (default platform)")
    create.add_argument("--admin", action="store_true", help="Make it a registry admin key")
    create.add_argument("--expires-in-days", type=int, metavar="N", help="Expire after N days (1-365)")
    create.add_argument("--name", metavar="NAME", help="Key name (default: generated)")
    keys_sub.add_parser("list", help="List keys (masked prefixes only)")
    revoke = keys_sub.add_parser("revoke", help="Revoke one key")
    revoke.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="The key_id, or its key_prefix")
    for p in (create, keys_sub.choices["list"], revoke):
        p.add_argument("--state-file", type=Path, metavar="PATH",
                       help=f"State file written by 'up' (default: env {STATE_FILE_ENV})")

    sub.add_parser("faults", help="List the fault switches")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hokusai-stack`` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "keys":
            return _keys(args)
        return _faults()
    except _CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except StackError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. 'hokusai-stack faults | head'
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# -- up -------------------------------------------------------------------------------------
def _raise_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from .extra import stack_extra_problem

    # the other environment's python: the option, else the variable start_stack() also reads
    mlflow_python = args.mlflow_python or os.environ.get("HOKUSAI_STACK_MLFLOW_PYTHON", "").strip() or None
    problem = stack_extra_problem(f"{PROG} up", server_elsewhere=mlflow_python is not None)
    if problem:
        raise _CliError(problem, code=2)
    from .launcher import launch_stack
    from .statefile import remove_state_file

    try:
        faults = check_faults(args.fault)
    except ValueError as exc:
        raise _CliError(str(exc), code=2) from None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    stack: Any = None
    state_file: Path | None = None
    env_file: Path | None = None
    code = 0
    try:
        _progress("starting MLflow, the auth service and the API service ...")
        from .stopped import without_process_faults

        stack = launch_stack(  # a stopped part (auth-stopped, mlflow-stopped) stops after the key is minted
            data_dir=args.data_dir, faults=without_process_faults(faults), backend_store_uri=args.backend_store_uri,
            keystore_url=args.keystore_url, cache_ttl=args.cache_ttl, policy=args.policy,
            startup_timeout=args.startup_timeout, progress=_progress, mlflow_python=mlflow_python,
        )
        state_file = _write_state(stack, args)
        key = stack.mint_key(scopes=("read", "write"), name="hokusai-stack up")
        if faults != without_process_faults(faults):
            stack.set_faults(faults)
        env_file = _write_exports(stack, state_file, key, getattr(args, "env_file", None))
        _print_banner(stack, state_file, key, env_file)
        while True:
            time.sleep(0.5)
            stack.check_alive()
    except KeyboardInterrupt:
        _ignore_signals()
        _progress("stopping ...")
    except StackError as exc:
        _ignore_signals()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        _ignore_signals()
        if stack is not None:
            stack.stop()
        if state_file is not None:
            remove_state_file(state_file, stack)
        if env_file is not None:
            env_file.unlink(missing_ok=True)  # its key belongs to a stack that no longer runs
    if stack is not None:
        _progress("stopped")
    return code


def _export_lines(stack: Any, state_file: Path, raw_key: str) -> list[str]:
    return [
        f"export HOKUSAI_TARGET=remote HOKUSAI_API_URL={stack.api_url} HOKUSAI_AUTH_URL={stack.auth_url}",
        f"export {STATE_FILE_ENV}={state_file}",
        f"export MLFLOW_TRACKING_URI={stack.tracking_uri}",
        f"export HOKUSAI_API_KEY={raw_key}",
        'export MLFLOW_TRACKING_TOKEN="$HOKUSAI_API_KEY"',
    ]


def _write_exports(stack: Any, state_file: Path, key: Any, env_file: Path | None) -> Path:
    """The export lines, with the full key, in a 0600 file (never on screen)."""
    from .envfile import ENV_FILE_NAME, write_env_file

    path = env_file or state_file.parent / ENV_FILE_NAME
    return write_env_file(path, _export_lines(stack, state_file, key.reveal()))


def _write_state(stack: Any, args: argparse.Namespace) -> Path:
    """The state file, with a set of suite keys that are never printed, for 'pytest --hokusai-target=local'.

    By default it goes to the well-known path that the plugin looks at; if a live stack's state file
    is already there, this stack's goes into its data dir instead (and the banner names it).
    """
    from .statefile import (
        SUITE_KEY_RATE_LIMIT,
        default_state_path,
        mint_suite_keys,
        read_stack_state,
        write_stack_state,
    )

    path: Path | None = args.state_file or (args.data_dir / "stack.json" if args.data_dir else None)
    if path is None:
        path = default_state_path()
        try:
            other = read_stack_state(path)
        except StackError:
            other = None
        if other is not None and other.stale_reason(timeout=1.0) is None:
            _progress(f"another running stack's state file is at {path}; this one's goes into its data dir")
            path = stack.data_dir / "stack.json"
    keys = mint_suite_keys(stack, stack.faults, rate_limit_per_hour=SUITE_KEY_RATE_LIMIT)
    return write_stack_state(stack, path, keys, pids=stack.pids())


def _print_banner(stack: Any, state_file: Path, key: Any, env_file: Path) -> None:
    faults = ", ".join(stack.faults) or "none"
    lines = [
        f"Hokusai local stack is up (faults: {faults}). Ctrl-C stops it.",
        f"  API service       {stack.api_url}",
        f"  auth service      {stack.auth_url}",
        f"  tracking URI      {stack.tracking_uri}",
        f"  direct MLflow     {stack.direct_mlflow_url}",
        f"  MLflow upstream   {stack.mlflow_url} (MLflow {stack.mlflow_version}, REST at {stack.mlflow_rest_url})",
        f"  data dir          {stack.data_dir}",
        f"  state file        {state_file}",
        f"  API key           {key.masked} (read, write; in full only in the env file)",
        (f"  env file          {env_file} (mode 0600: HOKUSAI_API_URL, HOKUSAI_AUTH_URL, HOKUSAI_API_KEY, "
         f"{STATE_FILE_ENV}, MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN)"),
        "",
        "In another shell, load the environment with:",
        f"source {env_file}",
    ]
    print("\n".join(lines), flush=True)


# -- keys -----------------------------------------------------------------------------------
def _attach(state_file: Path | None) -> Any:
    from .launcher import Stack

    path = state_file or (Path(os.environ[STATE_FILE_ENV]) if os.environ.get(STATE_FILE_ENV) else None)
    if path is None:
        from .statefile import default_state_path

        if not default_state_path().is_file():
            raise _CliError(NO_STATE_FILE, code=2)
        path = default_state_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _CliError(f"state file {path} does not exist: is 'hokusai-stack up' running?", code=2) from None
    except OSError as exc:
        raise _CliError(f"cannot read state file {path}: {exc.strerror}", code=2) from None
    try:
        return Stack.from_json(text)
    except (ValueError, KeyError, TypeError):
        raise _CliError(f"state file {path} is not a hokusai-stack state file", code=2) from None


def _keys(args: argparse.Namespace) -> int:
    stack = _attach(args.state_file)
    if args.keys_command == "create":
        scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
        key = stack.mint_key(scopes=scopes, service_id=args.service_id, is_admin=args.admin,
                             expires_in_days=args.expires_in_days, name=args.name)
        print(f"created key {key.masked} (key_id {stack.key_id_of(key)}, scopes {','.join(scopes)}"
              f"{', admin' if args.admin else ''})", file=sys.stderr)
        print(key.reveal(), flush=True)  # asked for: the key on stdout, alone, for $(...)
        return 0
    if args.keys_command == "list":
        rows = stack.list_keys()
        print(f"{'key_id':36}  {'prefix':14}  {'active':6}  {'expires_at':25}  scopes / name")
        for k in rows:
            prefix = str(k.get("key_prefix", "")) + "\u2026"
            print(f"{k.get('key_id', ''):36}  {prefix:14}  {'yes' if k.get('is_active') else 'no':6}  "
                  f"{k.get('expires_at') or '-'!s:25}  {','.join(k.get('scopes') or [])} / {k.get('name', '')}")
        return 0
    info = stack.revoke_id(args.key)
    print(f"revoked key {info.get('key_id')} ({info.get('key_prefix')}\u2026, {info.get('name')})")
    return 0


# -- faults ---------------------------------------------------------------------------------
def _faults() -> int:
    width = max(len(name) for name in FAULTS)
    print(f"{'fault':{width}}  {'part':4}  {'diagnosis':24}  {'history':9}  description")
    for f in FAULTS.values():
        print(f"{f.name:{width}}  {f.component:4}  {f.code:24}  {f.history:9}  {f.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
