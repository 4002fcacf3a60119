"""The state file of a running ``hokusai-stack up``: what another process needs to attach to it.

``hokusai-stack up`` writes it (mode 0600, never printed): the URLs, the admin token, the faults,
the pid of the ``up`` process and the pids of the services, and a set of keys minted for the live
suite (``primary``, ``readonly``, ``revoked``). ``pytest -m live --hokusai-target=local`` reads it
(from ``--hokusai-stack-state-file`` / ``HOKUSAI_STACK_STATE_FILE``, else :func:`default_state_path`)
and attaches instead of starting a stack: a verdict in seconds while iterating on a fix. The run
never stops a stack it attached to. A state file whose stack is gone (the ``up`` process exited, a
service does not answer) is *stale*: the run says so and starts its own stack.

Nothing here imports FastAPI, uvicorn or MLflow.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StackError
from ..secret import Secret
from .config import STACK_TOKEN_HEADER, user_cache_dir
from .launcher import Stack
from .mlflow_server import STATIC_PREFIX
from .process import http_ok

__all__ = [
    "SCHEMA",
    "SUITE_KEYS",
    "StackState",
    "default_state_path",
    "mint_suite_keys",
    "read_stack_state",
    "remove_state_file",
    "write_stack_state",
]

SCHEMA = "hokusai-stack-state/1"
#: The keys a live run needs, in the order they are minted.
SUITE_KEYS = ("primary", "readonly", "revoked")
#: Suite keys are used run after run: give them the auth service's highest hourly rate limit.
SUITE_KEY_RATE_LIMIT = 100_000
_PROBE_TIMEOUT_S = 2.0
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_state_path() -> Path:
    """Where ``hokusai-stack up`` writes its state file by default: ``~/.cache/pytest-hokusai/stack.json``."""
    return user_cache_dir() / "stack.json"


@dataclass
class StackState:
    """A parsed state file: the stack handle (``stop()`` does nothing), the suite keys, the raw data."""

    path: Path
    stack: Stack
    keys: dict[str, Secret] = field(default_factory=dict)
    launcher_pid: int | None = None
    pids: list[int] = field(default_factory=list)

    def stale_reason(self, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
        """Why this stack cannot be used (``None``: the ``up`` process lives and every part answers)."""
        if self.launcher_pid is not None and not _pid_alive(self.launcher_pid):
            return f"the hokusai-stack process (pid {self.launcher_pid}) is gone"
        token = {STACK_TOKEN_HEADER: self.stack.admin_token}
        for name, url, headers in (
            ("the API service", self.stack.api_url + "/_stack/faults", token),
            ("the auth service", self.stack.auth_url + "/_stack/faults", token),
            ("MLflow", self.stack.mlflow_url + STATIC_PREFIX + "/health", {}),
        ):
            if not http_ok(url, timeout=timeout, headers=headers):
                return f"{name} at {url.split('/_stack')[0]} does not answer"
        return None

    def live_faults(self, timeout: float = _PROBE_TIMEOUT_S) -> tuple[str, ...]:
        """The faults the running API service has on now (they can change after ``up``)."""
        request = urllib.request.Request(self.stack.api_url + "/_stack/faults",
                                         headers={STACK_TOKEN_HEADER: self.stack.admin_token})
        try:
            with _NO_PROXY_OPENER.open(request, timeout=timeout) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read the running stack's faults: {exc}") from None
        return tuple(sorted(str(f) for f in data.get("faults", ())))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def mint_suite_keys(stack: Stack, faults: Iterable[str] = (), *,
                    rate_limit_per_hour: int | None = None) -> dict[str, Secret]:
    """Mint the live suite's keys: ``primary`` (read, write), ``readonly`` (read), ``revoked``.

    With the ``revocation-delay`` fault the revoked key is used once through the proxy before it is
    revoked, so that its validation is cached (the fault models a key in use when revoked).
    """
    primary = stack.mint_key(scopes=("read", "write"), name="pytest-hokusai write key",
                             rate_limit_per_hour=rate_limit_per_hour)
    readonly = stack.mint_key(scopes=("read",), name="pytest-hokusai read-only key",
                              rate_limit_per_hour=rate_limit_per_hour)
    revoked = mint_revoked_key(stack, faults)
    return {"primary": primary, "readonly": readonly, "revoked": revoked}


def mint_revoked_key(stack: Stack, faults: Iterable[str] = ()) -> Secret:
    """A freshly revoked key (used once first when the ``revocation-delay`` fault is on)."""
    revoked = stack.mint_key(scopes=("read", "write"), name="pytest-hokusai revoked key")
    if "revocation-delay" in tuple(faults):
        _use_once(stack.tracking_uri, revoked)
    stack.revoke(revoked)
    return revoked


def _use_once(tracking_uri: str, key: Secret) -> None:
    request = urllib.request.Request(f"{tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Authorization": f"Bearer {key.reveal()}"})
    try:
        with _NO_PROXY_OPENER.open(request, timeout=10) as resp:
            resp.read()
    except OSError:
        pass  # the later revocation check reports what the proxy does with it


def write_stack_state(stack: Stack, path: Path, keys: Mapping[str, Secret], pids: Iterable[int] = ()) -> Path:
    """Write the state file (created 0600, replaced atomically); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(stack.to_json())
    data.update(schema=SCHEMA, pids=sorted(pids), keys={name: keys[name].reveal() for name in SUITE_KEYS if name in keys})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_stack_state(path: Path) -> StackState | None:
    """The state file at ``path``, or ``None`` if there is none; StackError if it is unreadable or not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"cannot read the stack state file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        stack = Stack.from_json(text)
        keys = {name: Secret(raw, source=f"stack state file ({name} key)")
                for name, raw in (data.get("keys") or {}).items() if name in SUITE_KEYS and raw}
        launcher = data.get("launcher_pid")
        pids = [int(p) for p in data.get("pids", ())]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StackError(f"{path} is not a hokusai-stack state file") from None
    return StackState(path=path, stack=stack, keys=keys,
                      launcher_pid=int(launcher) if isinstance(launcher, int) else None, pids=pids)


def remove_state_file(path: Path, stack: Stack) -> None:
    """Delete the state file if it still describes ``stack`` (another ``up`` may have replaced it)."""
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("api_url") == stack.api_url:
        Path(path).unlink(missing_ok=True)
