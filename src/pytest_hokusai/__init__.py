"""pytest-hokusai: live checks, root-cause diagnosis and a local reference stack for the
Hokusai ML platform's MLflow registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import HokusaiError, KeyFormatError, SettingsError, StackError
from .evidence import Exchange, Recorder
from .secret import Secret
from .settings import HokusaiKeys, HokusaiSettings

if TYPE_CHECKING:
    from .auth import AuthClient
    from .http import HokusaiSession
    from .registry import ToyModel
    from .runtime import HokusaiRun

__version__ = "0.1.0"

# Fixture value types, importable for annotations (``def test_x(hokusai_session: HokusaiSession)``).
# Loaded lazily so that importing the plugin stays cheap.
_LAZY = {"AuthClient": "auth", "HokusaiSession": "http", "ToyModel": "registry", "HokusaiRun": "runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


__all__ = [
    "AuthClient",
    "Exchange",
    "HokusaiError",
    "HokusaiKeys",
    "HokusaiRun",
    "HokusaiSession",
    "HokusaiSettings",
    "KeyFormatError",
    "Recorder",
    "Secret",
    "SettingsError",
    "StackError",
    "ToyModel",
    "__version__",
]
