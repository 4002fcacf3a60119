"""pytest-hokusai's entry point: options, configuration, report header. Nothing costly here.

Importing this module must not import mlflow, sklearn, pandas, fastapi or uvicorn.
"""

from __future__ import annotations

import pytest

from ._keys import KEYS_KEY, RECORDER_KEY, SETTINGS_KEY
from .evidence import Recorder
from .settings import SETTINGS, HokusaiSettings, resolve_keys, settings_from_config
from .errors import SettingsError

GROUP_DESCRIPTION = "Hokusai platform live checks (pytest-hokusai)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hokusai", GROUP_DESCRIPTION)
    for spec in SETTINGS:
        help_text = f"{spec.help} (ini {spec.ini}, env {spec.env}; default: {spec.default or 'unset'})"
        if spec.flag:
            group.addoption(spec.option, action="store_true", default=None, dest=spec.dest, help=help_text)
        else:
            group.addoption(spec.option, action="store", default=None, dest=spec.dest,
                            metavar=spec.metavar, choices=spec.choices, help=help_text)
        parser.addini(spec.ini, help=spec.help, type="string", default="")


def get_settings(config: pytest.Config) -> HokusaiSettings:
    """The run's resolved :class:`HokusaiSettings` (resolved once, in ``pytest_configure``)."""
    return config.stash[SETTINGS_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = settings_from_config(config)
    config.stash[SETTINGS_KEY] = settings
    try:
        config.stash[KEYS_KEY] = resolve_keys(settings)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RECORDER_KEY] = Recorder()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return []
    keys = config.stash.get(KEYS_KEY, None)
    key = keys.primary.masked if keys and keys.primary else "not set"
    if settings.is_local:
        return [f"hokusai: target local (bundled reference stack), key minted at start"]
    return [
        f"hokusai: target {settings.target}, api {settings.api_url}, auth {settings.auth_url}, key {key}",
        f"hokusai: tracking uri {settings.tracking_uri}, service_id {settings.service_id}, "
        f"timeout {settings.timeout:g}s",
    ]
