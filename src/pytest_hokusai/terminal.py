"""What pytest-hokusai shows in the terminal, and when: the report header only where the plugin is
used, and short tracebacks for failing live checks.

A failing live check's story is its diagnosis (``CODE: summary`` first in its message) and the
evidence in the ``hokusai diagnosis`` section at the end of the run; a long traceback through the
MLflow client's ``rest_utils`` adds hundreds of lines and nothing a deployment owner can act on. So
live checks default to ``--tb=short``; an explicit ``--tb`` from the user still wins (pytest's own
default, ``auto``, counts as not given).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import pytest

from .settings import SETTINGS, HokusaiSettings

__all__ = ["LIVE_TBSTYLE", "header_wanted", "shorten_live_traceback"]

#: The traceback style of failing live checks when the user gave no ``--tb``.
LIVE_TBSTYLE: Final = "short"
_ENV_PREFIX = "HOKUSAI_"


def _selects_live(config: pytest.Config) -> bool:
    markexpr = str(config.getoption("markexpr", "") or "")
    return "live" in markexpr and "not live" not in markexpr


def header_wanted(config: pytest.Config, settings: HokusaiSettings,
                  environ: Mapping[str, str] | None = None) -> bool:
    """True when the run uses the plugin: a hokusai option or ini key is set, a ``HOKUSAI_*``
    environment variable is set, or the ``-m`` expression selects live checks. An unrelated
    project's run, with the plugin merely installed, prints no ``hokusai:`` line."""
    env = os.environ if environ is None else environ
    if any(name.startswith(_ENV_PREFIX) and value.strip() for name, value in env.items()):
        return True
    names = {spec.attr for spec in SETTINGS}
    if any(source != "default" and not source.startswith("derived") for name, source in settings.sources.items()
           if name in names):
        return True
    return _selects_live(config)


def shorten_live_traceback(item: pytest.Item, call: pytest.CallInfo[Any], report: pytest.TestReport) -> None:
    """Re-render a failing live check's traceback in :data:`LIVE_TBSTYLE`, unless the user chose a
    ``--tb`` style. Messages from ``pytest.fail(..., pytrace=False)`` are left as they are."""
    if not report.failed or call.excinfo is None:
        return
    if str(item.config.getoption("tbstyle", "auto")) != "auto":
        return  # the user's explicit --tb wins
    excinfo = call.excinfo
    if isinstance(excinfo.value, pytest.fail.Exception) and not excinfo.value.pytrace:
        return
    if excinfo.errisinstance(pytest.FixtureLookupError):
        return  # pytest's own "fixture not found" text is already short
    try:
        report.longrepr = excinfo.getrepr(
            funcargs=True, abspath=False, showlocals=bool(item.config.getoption("showlocals", False)),
            style=LIVE_TBSTYLE, tbfilter=_without_library_frames(item), truncate_locals=True)
    except Exception:  # noqa: BLE001 - keep pytest's own rendering rather than lose the failure
        return


def _is_library(path: str) -> bool:
    """A frame of an installed third-party package (the MLflow client's rest_utils, requests ...)."""
    return ("site-packages" in path or "dist-packages" in path) and "pytest_hokusai" not in path


def _without_library_frames(item: pytest.Item) -> Callable[[Any], Any]:
    """pytest's own traceback filter for the item, then the installed libraries' frames dropped
    (the last frame, where the exception was raised, always stays)."""
    from _pytest._code.code import Traceback

    base = getattr(item, "_traceback_filter", None)

    def tbfilter(excinfo: Any) -> Any:
        traceback = base(excinfo) if base is not None else excinfo.traceback
        if len(traceback) <= 2:
            return traceback
        kept = [entry for entry in traceback[:-1] if not _is_library(str(entry.path))]
        return Traceback([*kept, traceback[-1]])

    return tbfilter
