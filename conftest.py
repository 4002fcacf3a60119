"""Repo-level test helpers (pytester); nothing the plugin itself needs."""

from __future__ import annotations

pytest_plugins = ["pytester"]
