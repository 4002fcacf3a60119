"""Exception hierarchy of pytest-hokusai.

Every error the package raises on purpose derives from :class:`HokusaiError`, so callers can
catch the package's failures without catching unrelated ones.
"""

from __future__ import annotations

__all__ = [
    "HokusaiError",
    "KeyFormatError",
    "SettingsError",
    "StackError",
]


class HokusaiError(Exception):
    """Base class of every error raised by pytest-hokusai."""


class SettingsError(HokusaiError):
    """A setting has an invalid value; the message names the setting, its source and the fix."""


class KeyFormatError(HokusaiError, ValueError):
    """An API key does not have the Hokusai key format (``hk_(live|test|dev)_`` + alphanumerics)."""


class StackError(HokusaiError):
    """The local reference stack could not start, or a part of it failed."""
