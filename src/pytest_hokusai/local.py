"""The plugin's side of ``--hokusai-target=local``: start the bundled stack once per run.

Without xdist the stack starts lazily, the first time a fixture needs it, and stops at the end of
the session. Under pytest-xdist the controller starts it once in ``pytest_sessionstart`` and hands
its URLs and minted keys to every worker through ``workerinput`` (no file lock is needed: workers
never start a stack of their own, so none can stop it under another's feet).

With a running ``hokusai-stack up`` (its state file at ``--hokusai-stack-state-file``, or the
default location), the run attaches to that stack and its suite keys instead of starting one, and
never stops it; a stale state file (the stack is gone) falls back to starting a stack, saying so.

This module imports the stack launcher only when a stack is actually started or attached to.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StackError
from .secret import Secret
from .settings import HokusaiKeys, HokusaiSettings

__all__ = ["WORKERINPUT_KEY", "LocalTarget", "LocalTargetInfo"]

WORKERINPUT_KEY = "hokusai_local_stack"


@dataclass
class LocalTargetInfo:
    """What the checks need of a running local stack: URLs, minted keys and the stack handle."""

    api_url: str
    auth_url: str
    tracking_uri: str
    direct_mlflow_url: str
    keys: HokusaiKeys
    stack_json: str  #: Stack.to_json(): lets a worker mint more keys (admin token inside)
    faults: tuple[str, ...] = ()

    def to_wire(self) -> str:
        """Serialise for xdist workerinput (raw keys included: it never touches disk or output)."""
        return json.dumps({
            "api_url": self.api_url, "auth_url": self.auth_url, "tracking_uri": self.tracking_uri,
            "direct_mlflow_url": self.direct_mlflow_url, "stack_json": self.stack_json,
            "faults": list(self.faults),
            "keys": {name: (k.reveal() if k else None) for name, k in
                     (("primary", self.keys.primary), ("readonly", self.keys.readonly),
                      ("revoked", self.keys.revoked))},
        })

    @classmethod
    def from_wire(cls, text: str) -> LocalTargetInfo:
        data = json.loads(text)
        keys = {n: Secret(v, source=f"local stack ({n} key)") if v else None for n, v in data["keys"].items()}
        return cls(
            api_url=data["api_url"], auth_url=data["auth_url"], tracking_uri=data["tracking_uri"],
            direct_mlflow_url=data["direct_mlflow_url"], stack_json=data["stack_json"],
            faults=tuple(data.get("faults", ())),
            keys=HokusaiKeys(primary=keys["primary"], readonly=keys["readonly"], revoked=keys["revoked"]),
        )

    def apply(self, settings: HokusaiSettings) -> HokusaiSettings:
        return settings.with_urls(
            api_url=self.api_url, auth_url=self.auth_url, tracking_uri=self.tracking_uri,
            direct_mlflow_url=self.direct_mlflow_url,
        )


class LocalTarget:
    """Owns the run's local stack: starts it once, mints the run's keys, stops it."""

    def __init__(self, *, progress: Callable[[str], None] | None = None, wire: str | None = None,
                 faults: tuple[str, ...] = (), state_file: Path | None = None,
                 mlflow_python: Path | None = None) -> None:
        self._progress = progress
        self._state_file = state_file
        #: True when the run uses a stack started by ``hokusai-stack up`` (never stopped by the run)
        self.attached = False
        self._lock = threading.Lock()
        self._info: LocalTargetInfo | None = LocalTargetInfo.from_wire(wire) if wire else None
        self._context: Any = None
        self._stack: Any = None
        self._error: BaseException | None = None
        self._faults = faults
        self._mlflow_python = mlflow_python  #: --hokusai-stack-mlflow-python (None: the default)
        self._thread: threading.Thread | None = None
        self._pending: list[str] = []

    @property
    def info(self) -> LocalTargetInfo | None:
        """The running stack's URLs and keys, or None while it has not started (never starts it)."""
        return self._info

    def start_in_background(self) -> None:
        """Begin starting the stack in a thread, so it overlaps collection and imports.

        :meth:`ensure` then waits for it (and re-raises its failure). Progress lines from the
        thread are held and printed by the main thread.
        """
        if self._info is not None or self._thread is not None:
            return

        def run() -> None:
            try:
                self.ensure()
            except BaseException:  # noqa: BLE001, S110 - kept in self._error, re-raised by ensure()
                pass

        self._thread = threading.Thread(target=run, name="hokusai-local-stack", daemon=True)
        self._thread.start()

    def _say(self, line: str) -> None:
        if threading.current_thread() is threading.main_thread():
            if self._progress is not None:
                self._progress(line)
        else:
            self._pending.append(line)

    def _flush(self) -> None:
        lines, self._pending = self._pending, []
        if self._progress is not None and threading.current_thread() is threading.main_thread():
            for line in lines:
                self._progress(line)

    def ensure(self) -> LocalTargetInfo:
        """Start the stack and mint keys on first use; re-raise the first failure afterwards."""
        with self._lock:
            self._flush()
            if self._info is not None:
                return self._info
            if self._error is not None:
                raise StackError(f"the local stack failed to start earlier in this run: {self._error}")
            try:
                self._info = self._start()
            except BaseException as exc:
                self._error = exc
                self.stop()
                raise
            return self._info

    def _start(self) -> LocalTargetInfo:
        attached = self._attach()
        if attached is not None:
            return attached
        from .stack import start_stack  # heavy part loads only now
        from .stack.statefile import mint_suite_keys
        from .stack.stopped import without_process_faults

        # auth-stopped / mlflow-stopped stop a process: mint the keys first, then stop it (below)
        context = start_stack(faults=without_process_faults(self._faults), progress=self._say,
                              mlflow_python=self._mlflow_python)
        self._context = context
        stack = context.__enter__()
        self._stack = stack
        minted = mint_suite_keys(stack, self._faults)
        if tuple(self._faults) != without_process_faults(self._faults):
            stack.set_faults(self._faults)
        keys = HokusaiKeys(primary=minted["primary"], readonly=minted["readonly"], revoked=minted["revoked"])
        return LocalTargetInfo(
            api_url=stack.api_url, auth_url=stack.auth_url, tracking_uri=stack.tracking_uri,
            direct_mlflow_url=stack.direct_mlflow_url, keys=keys, stack_json=stack.to_json(),
            faults=tuple(self._faults),
        )

    def _attach(self) -> LocalTargetInfo | None:
        """The running ``hokusai-stack up`` of the state file, or None (the reason said) to start one."""
        from .stack.statefile import default_state_path, mint_revoked_key, read_stack_state

        path = self._state_file or default_state_path()
        try:
            state = read_stack_state(path)
        except StackError as exc:
            self._say(f"{exc}: starting a new stack")
            return None
        if state is None:
            if self._state_file is not None:
                self._say(f"no stack state file at {path}: starting a new stack")
            return None
        stale = state.stale_reason()
        if stale is not None:
            self._say(f"stack state file {path} is stale ({stale}): starting a new stack")
            return None
        stack = state.stack
        try:
            faults = state.live_faults()
        except StackError as exc:
            self._say(f"stack state file {path}: {exc}: starting a new stack")
            return None
        if set(faults) != set(self._faults):
            self._say(f"the running stack at {stack.api_url} has faults [{', '.join(faults) or 'none'}], this run "
                      f"asks for [{', '.join(self._faults) or 'none'}]: starting a new stack")
            return None
        missing = [name for name in ("primary", "readonly", "revoked") if name not in state.keys]
        if missing:
            self._say(f"stack state file {path} holds no {'/'.join(missing)} key: starting a new stack")
            return None
        revoked = state.keys["revoked"]
        if "revocation-delay" in faults:  # the fault needs a key revoked while its validation is cached
            revoked = mint_revoked_key(stack, faults)
        self.attached = True
        self._say(f"attached to the running stack at {stack.api_url} (state file {path}); "
                  "it keeps running after this run")
        return LocalTargetInfo(
            api_url=stack.api_url, auth_url=stack.auth_url, tracking_uri=stack.tracking_uri,
            direct_mlflow_url=stack.direct_mlflow_url, stack_json=stack.to_json(), faults=tuple(faults),
            keys=HokusaiKeys(primary=state.keys["primary"], readonly=state.keys["readonly"], revoked=revoked),
        )

    def stop(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()  # a start in progress finishes (or fails) before we stop it
        context, self._context = self._context, None
        self._stack = None
        if context is not None:
            context.__exit__(None, None, None)
