"""Configuration objects shared by the stack's launcher and its service processes.

The launcher writes a service's config as JSON into the environment of the child process
(``HOKUSAI_STACK_SERVICE_CONFIG``); the child reads it back with :func:`load_service_config`.
Nothing here imports FastAPI or MLflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV",
    "POLICIES",
    "STACK_TOKEN_HEADER",
    "ApiServiceConfig",
    "AuthServiceConfig",
    "dump_service_config",
    "load_service_config",
    "user_cache_dir",
]

CONFIG_ENV = "HOKUSAI_STACK_SERVICE_CONFIG"
#: Header carrying the stack's admin token on the stack-control endpoints (``/_stack/...``).
STACK_TOKEN_HEADER = "X-Hokusai-Stack-Token"
POLICIES = ("write-scope", "registry-admin")


def user_cache_dir() -> Path:
    """``~/.cache/pytest-hokusai``: the stack's state file and its MLflow store templates."""
    return Path.home() / ".cache" / "pytest-hokusai"


@dataclass
class AuthServiceConfig:
    """The auth service: key store URL, admin bearer token, faults."""

    db_url: str  #: SQLAlchemy URL of the key store (sqlite:///... or postgresql://...)
    admin_token: str  #: bearer token for the admin endpoints (keys create/list/get/revoke/rotate)
    host: str = "127.0.0.1"
    port: int = 0
    faults: list[str] = field(default_factory=list)
    kind: str = "auth"


@dataclass
class ApiServiceConfig:
    """The API service: balancer routes, auth middleware and MLflow proxy."""

    auth_url: str  #: e.g. http://127.0.0.1:41234
    #: the proxy's upstream (the platform's MLFLOW_SERVER_URL): where MLflow serves api/2.0/..., the
    #: server root up to MLflow 3.11, root + /mlflow from 3.12 (static prefix; stack/mlflow_server.py)
    mlflow_url: str
    admin_token: str  #: guards /_stack/* control endpoints
    host: str = "127.0.0.1"
    port: int = 0
    service_id: str = "platform"  #: AUTH_SERVICE_ID sent with each validation
    cache_ttl: float = 60.0  #: seconds a successful validation is cached; 0 = no cache
    policy: str = "write-scope"  #: or "registry-admin"
    auth_timeout: float = 5.0  #: the middleware's timeout on the auth call
    upstream_timeout: float = 30.0  #: the proxy's timeout on MLflow
    unreachable_url: str = "http://127.0.0.1:9"  #: upstream used by the mlflow-unreachable fault
    faults: list[str] = field(default_factory=list)
    kind: str = "api"
    #: the MLflow server root, the balancer's direct /mlflow target ("" = mlflow_url)
    mlflow_root_url: str = ""


def dump_service_config(config: AuthServiceConfig | ApiServiceConfig) -> str:
    return json.dumps(asdict(config))


def load_service_config(raw: str | None = None) -> AuthServiceConfig | ApiServiceConfig:
    """Parse a service config from JSON (default: the ``HOKUSAI_STACK_SERVICE_CONFIG`` variable)."""
    text = raw if raw is not None else os.environ.get(CONFIG_ENV, "")
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set; start stack services through start_stack()")
    data: dict[str, Any] = json.loads(text)
    kind = data.get("kind")
    if kind == "auth":
        return AuthServiceConfig(**data)
    if kind == "api":
        return ApiServiceConfig(**data)
    raise RuntimeError(f"unknown stack service kind {kind!r} in {CONFIG_ENV}")
