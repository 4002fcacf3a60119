"""API keys as the platform mints them: the raw key's shape, its stored hash and its prefix.

Keys are ``hk_live_`` (``hk_test_``, ``hk_dev_`` by environment) + 32 alphanumerics from
:mod:`secrets`. Only the key's SHA-256 hex digest and its ``key_prefix`` (the prefix plus the
first three characters of the secret part, e.g. ``hk_live_abc``) are stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timezone

__all__ = [
    "ENVIRONMENT_PREFIXES",
    "SECRET_LENGTH",
    "SERVICE_IDS",
    "generate_key",
    "hash_key",
    "key_prefix_of",
    "normalise_environment",
    "utcnow",
]

#: service_id values the live service accepts (contract 2.1, ``2c4d840``), in the order its
#: error messages list them.
SERVICE_IDS = ("platform", "website", "prediction")
#: environment -> key prefix (contract section 3). ``live``/``dev`` are accepted as aliases.
ENVIRONMENT_PREFIXES = {"production": "hk_live_", "test": "hk_test_", "development": "hk_dev_"}
_ENV_ALIASES = {"live": "production", "prod": "production", "dev": "development"}
#: length of the secret part of a minted key
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def normalise_environment(environment: str) -> str:
    env = _ENV_ALIASES.get(environment, environment)
    if env not in ENVIRONMENT_PREFIXES:
        raise ValueError(f"unknown key environment {environment!r}; use one of {', '.join(ENVIRONMENT_PREFIXES)}")
    return env


def generate_key(environment: str = "production") -> str:
    """Mint a raw key: the environment's prefix + 32 random alphanumerics."""
    prefix = ENVIRONMENT_PREFIXES[normalise_environment(environment)]
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_key(raw: str) -> str:
    """The stored form of a key: its SHA-256 hex digest."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def key_prefix_of(raw: str) -> str:
    """``hk_live_`` + the first three characters of the secret part (``hk_live_abc``)."""
    for prefix in ENVIRONMENT_PREFIXES.values():
        if raw.startswith(prefix):
            return raw[: len(prefix) + 3]
    return raw[:3]
