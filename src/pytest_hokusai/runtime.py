"""The run object: effective settings and keys (local stack applied), run state, triage.

One :class:`HokusaiRun` per pytest process lives in ``config.stash[STATE_KEY]``; fixtures, the
diagnosis hooks and the reports all read it, so the local stack is started in exactly one place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import StackError
from .local import WORKERINPUT_KEY, LocalTarget, LocalTargetInfo
from .reachability import HostReachability
from .settings import HokusaiKeys, HokusaiSettings
from .state import RunState

__all__ = ["KEY_MISSING_MESSAGE", "HokusaiRun", "environment_versions", "key_malformed_message"]

KEY_MISSING_MESSAGE = (
    "KEY_MISSING: no Hokusai API key is configured for target 'remote'. Export HOKUSAI_API_KEY=hk_live_... "
    "(or pass --hokusai-api-key-file PATH), or run against the bundled local stack with "
    "--hokusai-target=local."
)


def key_malformed_message(key: Any, problem: str) -> str:
    """The usage error for a malformed primary key (masked; nothing was sent)."""
    return (f"KEY_MALFORMED: the Hokusai API key {key.masked} from {key.source} is malformed: {problem}. "
            "No request was sent. Copy the full key (hk_live_ + 32 letters and digits) from the Hokusai "
            "dashboard into HOKUSAI_API_KEY (or the --hokusai-api-key-file file), or run against the bundled "
            "local stack with --hokusai-target=local.")


def environment_versions() -> dict[str, Any]:
    """Versions of the client-side parts, read from package metadata (no heavy imports)."""
    from importlib import metadata

    from .client_version import mlflow_client_version

    versions: dict[str, Any] = {"python": sys.version.split()[0], "mlflow": mlflow_client_version()}
    for dist in ("scikit-learn", "pandas", "numpy", "requests", "pytest", "pytest-html"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        versions["hokusai-ml-platform"] = metadata.version("hokusai-ml-platform")
    except metadata.PackageNotFoundError:
        versions["hokusai-ml-platform"] = None
    return versions


class HokusaiRun:
    """Everything one pytest process knows about the run."""

    def __init__(self, settings: HokusaiSettings, keys: HokusaiKeys, *, workerinput: dict[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.base_settings = settings
        self.base_keys = keys
        self.state = RunState()
        self.is_worker = workerinput is not None
        self.local: LocalTarget | None = None
        if settings.is_local:
            wire = (workerinput or {}).get(WORKERINPUT_KEY)
            faults = tuple(f for f in os.environ.get("HOKUSAI_STACK_FAULTS", "").split(",") if f)
            self.local = LocalTarget(progress=progress, wire=wire, faults=faults,
                                     state_file=settings.stack_state_file,
                                     mlflow_python=settings.stack_mlflow_python)
        #: hosts that answered / did not, shared by every session of the run (connect/first-byte budget)
        self.reachability = HostReachability(settings.connect_timeout)
        self.triage: Any = None  #: TriageEvidence once triage ran
        self.triage_error: str | None = None
        self._measurements: dict[str, dict[str, list[float]]] = {}
        self.blocker: Any = None  #: a network-level Finding after which live checks are not attempted
        self.baseline_diff: Any = None  #: BaselineDiff once compared with --hokusai-baseline

    # -- effective target -------------------------------------------------------------------
    def local_info(self) -> LocalTargetInfo | None:
        if self.local is None:
            return None
        info = self.local.ensure()
        for url in (info.api_url, info.auth_url):  # health-checked at start: no first-contact budget
            self.reachability.mark_answered(url)
        return info

    def settings(self) -> HokusaiSettings:
        info = self.local_info()
        return info.apply(self.base_settings) if info else self.base_settings

    def keys(self) -> HokusaiKeys:
        info = self.local_info()
        return info.keys if info else self.base_keys

    def target_block(self) -> dict[str, Any]:
        """The JSON report's ``target`` object (masked key, versions); never starts the stack."""
        settings = self.settings_if_known() or self.base_settings
        info = self.local.info if self.local is not None else None
        keys = info.keys if info is not None else self.base_keys
        versions = environment_versions()
        return {
            "mode": settings.target,
            "api_url": settings.api_url,
            "auth_url": settings.auth_url,
            "tracking_uri": settings.tracking_uri,
            "direct_mlflow_url": settings.direct_mlflow_url,
            "service_id": settings.service_id,
            "key": keys.primary.masked if keys.primary else None,
            "key_fingerprint": keys.primary.fingerprint if keys.primary else None,
            "versions": versions,
            "sdk_installed": versions.get("hokusai-ml-platform") is not None,
        }

    def settings_if_known(self) -> HokusaiSettings | None:
        """Effective settings without starting anything (None when the stack never started)."""
        if self.local is None:
            return self.base_settings
        info = self.local.info
        return info.apply(self.base_settings) if info is not None else None

    # -- measurements made by checks ----------------------------------------------------------
    def measure(self, name: str, value: float, *, nodeid: str | None = None) -> None:
        """Record a timing sample (``*_ms`` or ``*_s``) for the JSON ``timings`` block.

        Samples are attached to the current test's report, so they reach the controller under xdist.
        """
        key = nodeid or "<session>"
        self._measurements.setdefault(key, {}).setdefault(name, []).append(value)

    def drain_measurements(self, nodeid: str) -> dict[str, list[float]]:
        return self._measurements.pop(nodeid, {})

    # -- triage ---------------------------------------------------------------------------
    def ensure_triage(self) -> Any:
        """Run the triage probes once per process (bounded) and return their evidence."""
        if self.triage is None:
            from .diagnosis import run_triage
            from .http import HokusaiSession

            settings = self.settings_if_known() or self.base_settings
            keys = self.keys() if (self.local is None or self.local.info is not None) else self.base_keys

            def session_factory(**kwargs: Any) -> HokusaiSession:
                kwargs.setdefault("recorder", self.state.recorder)
                kwargs.setdefault("reachability", self.reachability)
                return HokusaiSession(**kwargs)

            self.triage = run_triage(settings, keys, session_factory, silent=self.reachability.silent_hosts())
            from .canary import triage_leftovers

            for leftover in triage_leftovers(self.triage):
                self.state.add_leftover(leftover)
        return self.triage

    def stop(self) -> None:
        if self.local is not None:
            try:
                self.local.stop()
            except StackError:
                pass
