"""pytest-hokusai: live checks, root-cause diagnosis and a local reference stack for the
Hokusai ML platform's MLflow registry."""

from __future__ import annotations

from .errors import HokusaiError, KeyFormatError, SettingsError, StackError
from .evidence import Exchange, Recorder
from .secret import Secret
from .settings import HokusaiKeys, HokusaiSettings

__version__ = "0.1.0"

__all__ = [
    "Exchange",
    "HokusaiError",
    "HokusaiKeys",
    "HokusaiSettings",
    "KeyFormatError",
    "Recorder",
    "Secret",
    "SettingsError",
    "StackError",
    "__version__",
]
