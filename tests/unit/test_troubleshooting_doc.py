"""docs/troubleshooting.md is generated from the rules table and must not go stale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hokusai.diagnosis import RULES
from pytest_hokusai.diagnosis.docs import REGENERATE_COMMAND, main, render_troubleshooting

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def test_committed_troubleshooting_doc_is_up_to_date() -> None:
    assert COMMITTED.exists(), f"{COMMITTED} is missing; generate it with: {REGENERATE_COMMAND}"
    committed = COMMITTED.read_text(encoding="utf-8")
    assert committed == render_troubleshooting(), (
        f"{COMMITTED} is stale (the diagnosis rules changed); regenerate it with: {REGENERATE_COMMAND}"
    )


def test_doc_has_a_section_per_code() -> None:
    text = render_troubleshooting()
    for code, rule in RULES.items():
        section = text.split(f"\n## {code}\n", 1)
        assert len(section) == 2, f"no section for {code}"
        body = section[1].split("\n## ", 1)[0]
        assert f"Category: {rule.category}." in body
        assert f"History: {rule.history}." in body
        for label, value in (("Symptom", rule.symptom), ("Likely cause", rule.cause), ("How to fix", rule.fix)):
            assert f"**{label}:** {value}" in body
        assert f"[`{code}`](#{code.lower()})" in text, "the index links to the section"


def test_render_is_deterministic_and_holds_no_key_shaped_text() -> None:
    text = render_troubleshooting()
    assert text == render_troubleshooting()
    assert re.search(r"hk_(live|test|dev)_[A-Za-z0-9]{8,}", text) is None, "only the key prefix, never a key"
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_cli_writes_checks_and_detects_staleness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "docs" / "troubleshooting.md"
    assert main(["--path", str(target), "--check"]) == 1  # missing counts as stale
    assert main(["--path", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_troubleshooting()
    assert main(["--path", str(target), "--check"]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert main(["--path", str(target), "--check"]) == 1
    assert REGENERATE_COMMAND in capsys.readouterr().err


def test_module_entry_point_prints_the_guide() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_hokusai.diagnosis.docs", "--stdout"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == render_troubleshooting()
