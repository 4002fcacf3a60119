"""The plugin's public surface: cheap import, options, markers, fixtures, exports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest_hokusai

HEAVY = ("mlflow", "sklearn", "pandas", "fastapi", "uvicorn", "matplotlib", "starlette")


def test_plugin_import_loads_no_heavy_module():
    code = (
        "import sys, json; import pytest_hokusai.plugin, pytest_hokusai.fixtures; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_exports_sorted_and_complete():
    names = pytest_hokusai.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(pytest_hokusai, name), name


def test_markers_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.live: talks to a Hokusai deployment*",
        "@pytest.mark.hokusai_auth: checks the auth service directly*",
        "@pytest.mark.hokusai_registration: *",
    ])


def test_fixtures_listed_with_docstrings(pytester):
    from pytest_hokusai import fixtures

    result = pytester.runpytest("--fixtures")
    for name in fixtures.__all__:
        result.stdout.fnmatch_lines([f"{name} *"])
    result.stdout.fnmatch_lines(["*The API key under test*"])


def test_options_in_help(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*Hokusai platform live checks*", "*--hokusai-target={remote,local}*"])


def test_invalid_setting_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--hokusai-timeout=abc")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*Invalid value 'abc' for hokusai setting 'timeout' from command line*"])


def test_strict_markers_accept_hokusai_markers(pytester):
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.hokusai_proxy\n"
        "def test_x():\n    pass\n"
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)
