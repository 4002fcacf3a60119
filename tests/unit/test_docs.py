"""The README and CI script stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_hokusai.markers import MARKERS
from pytest_hokusai.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_test_command_is_what_ci_runs():
    blocks = _bash_blocks(README)
    test_command = next(b.strip() for b in blocks if "pytest -p no:cacheprovider" in b)
    pytest_part = test_command.split("&& ")[-1].replace(".venv/bin/", ".venv/bin/")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert pytest_part in ci, f"CI does not run the README's test command {pytest_part!r}"
    assert "pip install -e '.[test]'" in test_command and "pip install -q -e '.[test]'" in ci


def test_readme_main_job_command_targets_the_local_stack():
    main = next(b.strip() for b in _bash_blocks(README) if "--hokusai-target=local" in b and "-m live" in b)
    assert main.startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && ")
    assert "--html=report.html" in main and "--self-contained-html" in main


def test_every_setting_is_documented():
    for spec in SETTINGS:
        assert f"`{spec.option}`" in README, spec.option
        assert f"`{spec.ini}`" in README, spec.ini
        assert f"`{spec.env}`" in README, spec.env


def test_every_marker_is_documented():
    for name in MARKERS:
        assert f"`{name}`" in README, name


def test_every_public_fixture_is_documented():
    from pytest_hokusai import fixtures

    for name in fixtures.__all__:
        assert f"`{name}`" in README, name
