"""The API service's shared state: what its layers (balancer, auth middleware, proxy, events)
read and change on every request.

It has its own module so api_service.py, middleware.py, proxy.py, fastpath.py and events.py all
import :class:`ApiRuntime` at run time, and none of them imports another only for a type.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import ApiServiceConfig
from .faults import FAULTS, check_faults
from .upstream import UpstreamPool

__all__ = ["API_FAULTS", "ApiRuntime", "Principal", "ValidationCache"]

#: The fault switches this service acts on (the others belong to the auth service).
API_FAULTS = frozenset(name for name, fault in FAULTS.items() if fault.component == "api")
_CLIENT_DEFAULT_HEADERS = ("Accept", "Accept-Encoding", "Connection", "User-Agent")


@dataclass(frozen=True)
class Principal:
    """What a successful validation said about the caller (the fields HEAD reads)."""

    user_id: str | None
    key_id: str | None
    email: str | None = None
    service_id: str | None = None
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    is_admin: bool = False
    rate_limit_per_hour: int = 1000
    has_sufficient_balance: bool = True
    balance: float = 0.0

    @classmethod
    def from_validation(cls, data: Mapping[str, Any]) -> Principal:
        """Read a validation result the way the real middleware does (``user.*`` fallbacks)."""
        user = data.get("user") if isinstance(data.get("user"), Mapping) else {}
        assert isinstance(user, Mapping)
        scopes = data.get("scopes") or []
        roles = data.get("roles") or user.get("roles") or []
        is_admin = data.get("is_admin", user.get("is_admin", False))
        return cls(
            user_id=_opt_str(data.get("user_id", user.get("id"))),
            key_id=_opt_str(data.get("key_id")),
            email=_opt_str(data.get("email", user.get("email"))),
            service_id=_opt_str(data.get("service_id")),
            scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
            roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
            is_admin=bool(is_admin),
            rate_limit_per_hour=_as_int(data.get("rate_limit_per_hour"), 1000),
            has_sufficient_balance=bool(data.get("has_sufficient_balance", True)),
            balance=_as_float(data.get("balance"), 0.0),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _as_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@dataclass
class ValidationCache:
    """Successful validations, keyed by SHA-256 of the key (the raw key is never stored).

    The TTL is applied at lookup, so switching ``revocation-delay`` on also extends entries
    cached before the switch. An entry made under another service_id is a miss.
    """

    entries: dict[str, tuple[float, str, Principal]] = field(default_factory=dict)

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def get(self, key: str, service_id: str, ttl: float) -> Principal | None:
        if ttl <= 0:
            return None
        digest = self.digest(key)
        entry = self.entries.get(digest)
        if entry is None:
            return None
        stored_at, stored_service, principal = entry
        if stored_service != service_id or time.monotonic() - stored_at >= ttl:
            return None
        return principal

    def put(self, key: str, service_id: str, ttl: float, principal: Principal) -> None:
        if ttl > 0:
            self.entries[self.digest(key)] = (time.monotonic(), service_id, principal)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


class ApiRuntime:
    """Mutable state shared by the layers: config, fault set, cache, counters, HTTP clients."""

    def __init__(self, config: ApiServiceConfig) -> None:
        self.config = config
        self.faults: set[str] = set(check_faults(list(config.faults)))
        self.cache = ValidationCache()
        self.stats: Counter[str] = Counter()
        self._auth_client: httpx.AsyncClient | None = None
        self._upstream_client: httpx.AsyncClient | None = None
        self._upstream_pool: UpstreamPool | None = None

    @property
    def auth_client(self) -> httpx.AsyncClient:
        if self._auth_client is None:
            raise RuntimeError("the API service's lifespan has not started (run it with lifespan='on')")
        return self._auth_client

    @property
    def upstream_client(self) -> httpx.AsyncClient:
        if self._upstream_client is None:
            raise RuntimeError("the API service's lifespan has not started (run it with lifespan='on')")
        return self._upstream_client

    @property
    def upstream_pool(self) -> UpstreamPool:
        """The proxy's pooled upstream connections (asyncio streams parsed by httptools; upstream.py)."""
        if self._upstream_pool is None:
            raise RuntimeError("the API service's lifespan has not started (run it with lifespan='on')")
        return self._upstream_pool

    async def start(self) -> None:
        """Open the two pooled clients (lifespan startup)."""
        self._auth_client = httpx.AsyncClient(timeout=self.config.auth_timeout, trust_env=False)
        upstream = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.upstream_timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        # A transparent proxy adds nothing of its own: no Accept-Encoding (the body is relayed
        # raw, so a compressed answer the client never asked for would reach it), no User-Agent.
        for name in _CLIENT_DEFAULT_HEADERS:
            del upstream.headers[name]
        self._upstream_client = upstream
        self._upstream_pool = UpstreamPool(float(self.config.upstream_timeout))

    async def stop(self) -> None:
        """Close the clients (lifespan shutdown)."""
        for client in (self._auth_client, self._upstream_client, self._upstream_pool):
            if client is not None:
                await client.aclose()
        self._auth_client = self._upstream_client = None
        self._upstream_pool = None

    def stats_body(self) -> dict[str, Any]:
        keys = ("auth_calls", "auth_cache_hits", "proxied_requests", "direct_mlflow_requests",
                "upstream_errors")
        body: dict[str, Any] = {k: self.stats[k] for k in keys}
        body["cache_size"] = len(self.cache)
        body["faults"] = sorted(self.faults)
        body["policy"] = "registry-admin" if "registry-admin" in self.faults else self.config.policy
        body["cache_ttl"] = 3600.0 if "revocation-delay" in self.faults else float(self.config.cache_ttl)
        return body

    def faults_body(self) -> dict[str, Any]:
        return {"faults": sorted(self.faults), "effective": sorted(self.faults & API_FAULTS)}
