"""Start and stop the local reference stack: MLflow, the auth service and the API service.

:func:`start_stack` is a context manager::

    with start_stack(faults=["wrong-service-id"]) as stack:
        key = stack.mint_key(scopes=("read", "write"))
        ...  # MLFLOW_TRACKING_URI=stack.tracking_uri, MLFLOW_TRACKING_TOKEN=key.reveal()

It starts three child processes, each in its own process group on a free loopback port: the
MLflow server and the auth service in parallel, then the API service (which needs both URLs).
Each is waited for on its health endpoint against one monotonic deadline. On any failure
everything already started is stopped and :class:`~pytest_hokusai.errors.StackError` is raised
with the failing child's (redacted) log tail. Leaving the ``with`` block stops everything and
removes the data directory if the stack created it.

A running stack can be handed to another process with :meth:`Stack.to_json` /
:meth:`Stack.from_json` (URLs and the admin token; never an API key).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ..errors import StackError
from ..secret import Secret, redact
from .config import (
    CONFIG_ENV,
    POLICIES,
    STACK_TOKEN_HEADER,
    ApiServiceConfig,
    AuthServiceConfig,
    dump_service_config,
)
from .faults import check_faults
from .mlflow_server import STATIC_PREFIX, find_server_python, mlflow_ready_check, start_mlflow
from .process import ManagedProcess, free_port, http_ok, minimal_env, start_watchdog, wait_all_ready
from .serve import PARENT_PID_ENV

__all__ = ["Stack", "launch_stack", "start_stack", "write_state_file"]

Progress = Callable[[str], None]
_HTTP_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Stack:
    """A running local stack (or a handle to one started by another process).

    Attributes: ``api_url``, ``auth_url``, ``mlflow_url`` (the MLflow root, the proxy's
    upstream), ``tracking_uri`` (``api_url + "/api/mlflow"``), ``direct_mlflow_url``
    (``api_url + "/mlflow"``, the balancer's route straight to MLflow), ``admin_token`` (kept out
    of ``repr``), ``data_dir`` and ``faults``; ``mlflow_version`` (the server's MLflow) and
    ``mlflow_rest_url`` (where the proxy sends ``api/2.0/...``: the root up to MLflow 3.11,
    ``root + /mlflow`` from 3.12 on; see :mod:`.mlflow_server`).
    """

    def __init__(
        self,
        *,
        api_url: str,
        auth_url: str,
        mlflow_url: str,
        admin_token: str,
        data_dir: Path,
        faults: Sequence[str] = (),
        service_id: str = "platform",
        processes: Sequence[ManagedProcess] = (),
        owns_data_dir: bool = False,
        mlflow_version: str | None = None,
        mlflow_rest_url: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self.mlflow_url = mlflow_url.rstrip("/")
        self.admin_token = admin_token
        self.data_dir = Path(data_dir)
        self.faults: tuple[str, ...] = tuple(faults)
        self.service_id = service_id
        self.mlflow_version = mlflow_version
        self.mlflow_rest_url = (mlflow_rest_url or mlflow_url).rstrip("/")
        self._processes: list[ManagedProcess] = list(processes)
        self._owns_data_dir = owns_data_dir
        self._key_ids: dict[str, str] = {}  # Secret.fingerprint -> key_id
        self._stopped = False
        #: seconds each part took to become ready, e.g. ``{"MLflow": 7.4, ...}`` (empty for a handle)
        self.ready_times: dict[str, float] = {}
        #: seconds the whole start took (0.0 for a handle)
        self.startup_seconds = 0.0

    def __repr__(self) -> str:
        return (f"Stack(api_url={self.api_url!r}, auth_url={self.auth_url!r}, "
                f"mlflow_url={self.mlflow_url!r}, faults={self.faults!r})")

    # -- derived URLs -----------------------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        """What third-party MLflow clients use: ``{api_url}/api/mlflow``."""
        return self.api_url + "/api/mlflow"

    @property
    def direct_mlflow_url(self) -> str:
        """MLflow through the balancer route, without the API service: ``{api_url}/mlflow``."""
        return self.api_url + STATIC_PREFIX

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    # -- keys -------------------------------------------------------------------------------
    def mint_key(
        self,
        *,
        scopes: Iterable[str] = ("read", "write"),
        service_id: str = "platform",
        expires_in_days: int | None = None,
        expires_in_seconds: float | None = None,
        is_admin: bool = False,
        name: str | None = None,
        rate_limit_per_hour: int | None = None,
    ) -> Secret:
        """Create a key through the auth service's admin API; return it as a :class:`Secret`."""
        body: dict[str, Any] = {
            "name": name or f"hokusai-stack key {len(self._key_ids) + 1}",
            "service_id": service_id,
            "scopes": list(scopes),
            "environment": "production",
            "is_admin": is_admin,
        }
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        if rate_limit_per_hour is not None:
            body["rate_limit_per_hour"] = rate_limit_per_hour
        if expires_in_seconds is not None:
            # whole seconds on the wire; <= 0 mints an already-expired key
            body["expires_in_seconds"] = math.ceil(expires_in_seconds)
        data = self._admin("POST", "/api/v1/keys", body)
        try:
            raw = data["api_key"]
            key_id = str(data["key_info"]["key_id"])
        except (KeyError, TypeError) as exc:
            raise StackError(f"auth service: unexpected key-create response (no {exc})") from None
        key = Secret(raw, source="local stack (minted)")
        self._key_ids[key.fingerprint] = key_id
        return key

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key's info (``key_id``, ``key_prefix``, ``scopes``, ``is_active``, ...); no raw keys."""
        data = self._admin("GET", "/api/v1/keys")
        if not isinstance(data, list):
            raise StackError("auth service: unexpected key-list response (not a list)")
        return data

    def key_id_of(self, key: Secret) -> str:
        """The ``key_id`` of a key minted here, else found by its ``key_prefix`` among active keys."""
        known = self._key_ids.get(key.fingerprint)
        if known:
            return known
        raw = key.reveal()
        matches = [k for k in self.list_keys()
                   if k.get("is_active", True) and k.get("key_prefix") and raw.startswith(k["key_prefix"])]
        if len(matches) != 1:
            what = "no active key" if not matches else f"{len(matches)} active keys"
            raise StackError(f"cannot tell which key {key.masked} is: {what} with a matching key_prefix")
        return str(matches[0]["key_id"])

    def revoke(self, key: Secret) -> None:
        """Revoke a key (``DELETE /api/v1/keys/{key_id}``)."""
        self._admin("DELETE", f"/api/v1/keys/{urllib.parse.quote(self.key_id_of(key), safe='')}")

    def revoke_id(self, key_id_or_prefix: str) -> dict[str, Any]:
        """Revoke the one key whose ``key_id`` or ``key_prefix`` is, or starts with, the argument."""
        wanted = key_id_or_prefix.strip().rstrip("\u2026.")
        keys = self.list_keys()
        exact = [k for k in keys if wanted in (str(k.get("key_id")), k.get("key_prefix"))]
        matches = exact or [k for k in keys if str(k.get("key_id", "")).startswith(wanted)
                            or str(k.get("key_prefix", "")).startswith(wanted)]
        if len(matches) != 1:
            what = "no key matches" if not matches else f"{len(matches)} keys match"
            raise StackError(f"{what} {wanted!r}; give a longer key_id (see 'hokusai-stack keys list')")
        self._admin("DELETE", f"/api/v1/keys/{urllib.parse.quote(str(matches[0]['key_id']), safe='')}")
        return matches[0]

    # -- faults -----------------------------------------------------------------------------
    def set_faults(self, names: Iterable[str]) -> None:
        """Switch the running services to exactly these faults (``[]`` = healthy)."""
        from .stopped import is_running, restart_parts, stop_parts

        faults = check_faults(list(names))
        body = {"faults": list(faults)}
        restart_parts(self, faults)  # auth-stopped / mlflow-stopped switched off: start the part again
        for base in (self.auth_url, self.api_url):
            if base == self.auth_url and not is_running(self, "auth-stopped"):
                continue  # stopped: it learns the faults when it starts again
            _request("PUT", base + "/_stack/faults", body=body,
                     headers={STACK_TOKEN_HEADER: self.admin_token}, secret=self.admin_token)
        stop_parts(self, faults)  # the API's validation cache is empty now: the next request finds auth gone
        self.faults = faults

    # -- SDK registration events ------------------------------------------------------------
    def registration_events(self) -> list[dict[str, Any]]:
        """The tokenized-registration events the API service accepted, oldest first (each with
        ``received_at``, ``path``, ``model_id``, ``user_id``, ``key_id`` and the ``payload``)."""
        data = _request("GET", self.api_url + "/_stack/registration-events",
                        headers={STACK_TOKEN_HEADER: self.admin_token}, secret=self.admin_token)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise StackError("API service: unexpected registration-events response (no events list)")
        return events

    # -- processes --------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every live pid of every process group this stack started (empty for a handle)."""
        return sorted(pid for proc in self._processes for pid in proc.pids())

    def check_alive(self) -> None:
        """Raise :class:`StackError` with the log tail if a child of this stack has exited."""
        for proc in self._processes:
            code = proc.poll()
            if code is not None and not self._stopped and not proc.stopped:  # not a stopped part (auth-stopped)
                raise _scrub(proc.failure(f"exited with status {code}"), self.admin_token)

    def stop(self) -> None:
        """Stop every child (SIGTERM to all groups, wait, SIGKILL stragglers); idempotent.

        Removes the data directory if the stack created it. A handle from :meth:`from_json`
        stops nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(self._processes):
            proc.terminate()
        for proc in reversed(self._processes):
            proc.stop(timeout=_STOP_TIMEOUT_S)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- hand-over --------------------------------------------------------------------------
    def to_json(self) -> str:
        """URLs, admin token and faults as JSON, for :meth:`from_json` in another process."""
        return json.dumps({
            "api_url": self.api_url, "auth_url": self.auth_url, "mlflow_url": self.mlflow_url,
            "admin_token": self.admin_token, "data_dir": str(self.data_dir),
            "faults": list(self.faults), "service_id": self.service_id, "launcher_pid": os.getpid(),
            "mlflow_version": self.mlflow_version, "mlflow_rest_url": self.mlflow_rest_url,
        })

    @classmethod
    def from_json(cls, text: str) -> Stack:
        """A handle to a stack started elsewhere: keys and faults work, ``stop()`` does nothing."""
        data = json.loads(text)
        return cls(api_url=data["api_url"], auth_url=data["auth_url"], mlflow_url=data["mlflow_url"],
                   admin_token=data["admin_token"], data_dir=Path(data["data_dir"]),
                   faults=data.get("faults", ()), service_id=data.get("service_id", "platform"),
                   mlflow_version=data.get("mlflow_version"), mlflow_rest_url=data.get("mlflow_rest_url"))

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}", STACK_TOKEN_HEADER: self.admin_token}
        return _request(method, self.auth_url + path, body=body, headers=headers, secret=self.admin_token)


def write_state_file(stack: Stack, path: Path) -> Path:
    """Write :meth:`Stack.to_json` to ``path``, readable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, stack.to_json().encode())
    finally:
        os.close(fd)
    return path


def launch_stack(
    *,
    data_dir: str | Path | None = None,
    faults: Iterable[str] = (),
    backend_store_uri: str | None = None,
    keystore_url: str | None = None,
    cache_ttl: float = 60.0,
    policy: str = "write-scope",
    service_id: str = "platform",
    startup_timeout: float = 60.0,
    progress: Progress | None = None,
    mlflow_python: str | Path | None = None,
) -> Stack:
    """Start the stack and return it once healthy; the caller must call :meth:`Stack.stop`.

    Prefer :func:`start_stack`, which stops it for you. Parameters are those of ``start_stack``.
    """
    fault_names = check_faults(list(faults))
    backend_store_uri, keystore_url = pg_driver_url(backend_store_uri), pg_driver_url(keystore_url)
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    server = find_server_python(mlflow_python)  # before anything starts: a missing server is a clear error
    started = time.monotonic()
    owns = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="hokusai-stack-")) if data_dir is None else Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    admin_token = secrets.token_urlsafe(32)
    ports = _distinct_free_ports(4)
    mlflow_url, auth_url, api_url = (f"http://127.0.0.1:{p}" for p in ports[:3])
    stack = Stack(api_url=api_url, auth_url=auth_url, mlflow_url=mlflow_url, admin_token=admin_token,
                  data_dir=root, faults=fault_names, service_id=service_id, owns_data_dir=owns,
                  mlflow_version=server.version, mlflow_rest_url=mlflow_url + server.rest_prefix)
    say = progress or (lambda _msg: None)

    def ready(proc: ManagedProcess, seconds: float) -> None:
        stack.ready_times[proc.name] = seconds
        where = f" (MLflow {server.version}{', from ' + server.executable if server.external else ''})"
        say(f"{proc.name} ready in {seconds:.1f} s{where if proc is mlflow else ''}")

    try:
        mlflow = start_mlflow(port=ports[0], data_dir=root, backend_store_uri=backend_store_uri, server=server)
        stack._processes.append(mlflow)
        auth_config = AuthServiceConfig(
            db_url=keystore_url or f"sqlite:///{root / 'keys.db'}", admin_token=admin_token,
            port=ports[1], faults=list(fault_names),
        )
        auth = _start_service("auth service", auth_config, root, "auth.log")
        stack._processes.append(auth)
        stack._processes.append(start_watchdog([mlflow, auth], root / "logs" / "watchdog.log"))
        wait_all_ready([(auth, _health(auth_url, admin_token)), (mlflow, mlflow_ready_check(mlflow_url))],
                       startup_timeout, since=started, on_ready=ready)
        api_config = ApiServiceConfig(
            auth_url=auth_url, mlflow_url=stack.mlflow_rest_url, mlflow_root_url=mlflow_url,
            admin_token=admin_token, port=ports[2],
            service_id=service_id, cache_ttl=cache_ttl, policy=policy,
            unreachable_url=f"http://127.0.0.1:{ports[3]}", faults=list(fault_names),
        )
        api = _start_service("API service", api_config, root, "api.log")
        stack._processes.append(api)
        wait_all_ready([(api, _health(api_url, admin_token))], startup_timeout, since=started, on_ready=ready)
        from .stopped import stop_parts

        stop_parts(stack, fault_names)  # auth-stopped / mlflow-stopped: the part goes down once all are up
        stack.startup_seconds = time.monotonic() - started
    except StackError as exc:
        stack.stop()
        raise _scrub(exc, admin_token) from None
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def start_stack(
    *,
    data_dir: str | Path | None = None,
    faults: Iterable[str] = (),
    backend_store_uri: str | None = None,
    keystore_url: str | None = None,
    cache_ttl: float = 60.0,
    policy: str = "write-scope",
    service_id: str = "platform",
    startup_timeout: float = 60.0,
    progress: Progress | None = None,
    mlflow_python: str | Path | None = None,
) -> Iterator[Stack]:
    """Start the local stack, yield it when healthy, stop everything on exit.

    ``data_dir``: where logs, the SQLite files and artifacts go (default: a fresh temporary
    directory, removed at stop). ``faults``: fault switch names (see
    :data:`~pytest_hokusai.stack.faults.FAULTS`). ``backend_store_uri``: MLflow's backend store
    (default SQLite in ``data_dir``). ``keystore_url``: the auth service's key store
    (SQLAlchemy URL, default SQLite). ``cache_ttl``, ``policy``, ``service_id``: the API
    service's validation cache, authorization policy and the service_id it validates with.
    ``startup_timeout``: seconds for the whole start. ``progress``: called with one line per part.
    ``mlflow_python``: the Python whose ``mlflow server`` runs (another environment, e.g. one with
    the platform's MLflow 3.9.0); default ``$HOKUSAI_STACK_MLFLOW_PYTHON``, else this interpreter.

    Raises :class:`~pytest_hokusai.errors.StackError` (with the failing child's log tail) if the
    stack cannot start; nothing is left running then.
    """
    stack = launch_stack(
        data_dir=data_dir, faults=faults, backend_store_uri=backend_store_uri, keystore_url=keystore_url,
        cache_ttl=cache_ttl, policy=policy, service_id=service_id, startup_timeout=startup_timeout,
        progress=progress, mlflow_python=mlflow_python,
    )
    try:
        yield stack
    finally:
        stack.stop()


# -- helpers --------------------------------------------------------------------------------
def pg_driver_url(url: str | None) -> str | None:
    """``postgresql://...`` -> ``postgresql+psycopg2://...`` when psycopg2 is installed and psycopg
    (3) is not; any other URL unchanged.

    SQLAlchemy 2.1 maps the bare ``postgresql`` scheme to psycopg 3, while the ``postgres`` extra
    (and most environments) provide psycopg2: without this the bare scheme fails at MLflow's start
    with ``No module named 'psycopg'``.
    """
    bare = "postgresql://"
    if url and url.startswith(bare) and find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len(bare):]
    return url


def _start_service(name: str, config: AuthServiceConfig | ApiServiceConfig, root: Path,
                   log_name: str) -> ManagedProcess:
    env = minimal_env({CONFIG_ENV: dump_service_config(config), PARENT_PID_ENV: str(os.getpid())})
    proc = ManagedProcess(name, [sys.executable, "-m", "pytest_hokusai.stack.serve"],
                          log_path=root / "logs" / log_name, env=env, cwd=root)
    return proc.start()


def _health(base_url: str, admin_token: str) -> Callable[[], bool]:
    # Readiness = the app serves its stack-control endpoint with our token. Not /health: with the
    # auth-down or api-down fault /health answers 503 on purpose, and the stack must still start.
    url = base_url + "/_stack/faults"
    headers = {STACK_TOKEN_HEADER: admin_token}
    return lambda: http_ok(url, timeout=2.0, headers=headers)


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _scrub(exc: StackError, secret: str) -> StackError:
    return StackError(redact(str(exc)).replace(secret, "<admin token>"))


def _request(method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None,
             secret: str = "", timeout: float = _HTTP_TIMEOUT_S) -> Any:
    """One JSON request to a stack service; raises StackError (redacted) unless it answers 2xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    path = urllib.parse.urlsplit(url).path
    try:
        with _NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:500]
        detail = redact(detail).replace(secret, "<admin token>") if secret else redact(detail)
        raise StackError(f"{method} {path} -> {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StackError(f"{method} {url} failed: {exc} (is the stack running?)") from None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
