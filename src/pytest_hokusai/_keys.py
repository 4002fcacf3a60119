"""StashKeys of pytest-hokusai (values live in ``config.stash``, never on ``config._attr``)."""

from __future__ import annotations

from typing import Any

import pytest

from .evidence import Recorder
from .settings import HokusaiKeys, HokusaiSettings

SETTINGS_KEY = pytest.StashKey[HokusaiSettings]()
KEYS_KEY = pytest.StashKey[HokusaiKeys]()
RECORDER_KEY = pytest.StashKey[Recorder]()
#: run state shared by fixtures, diagnosis and reports (see pytest_hokusai.state)
STATE_KEY = pytest.StashKey[Any]()
