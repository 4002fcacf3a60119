"""tests/conftest.py skips collecting this tree under a ``-m`` expression that none of its tests can
match; that holds only while REPO_TEST_MARKERS lists every marker the tests here carry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_TEST_MARKERS, selects_nothing_here

TESTS = Path(__file__).resolve().parent.parent


def markers_in_code() -> set[str]:
    """``pytest.mark.<name>`` in the code (not in strings) of every module under tests/."""
    found = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "mark" and isinstance(node.value.value, ast.Name)
                    and node.value.value.id == "pytest"):
                found.add(node.attr)
    return found


def test_the_list_is_what_the_tests_use():
    assert markers_in_code() == set(REPO_TEST_MARKERS)


@pytest.mark.parametrize(("expression", "skipped"), [
    ("live", True),
    ("live and hokusai_edge", True),
    ("hokusai_sdk or hokusai_auth", True),
    ("live and not slow", True),
    ("", False),
    ("slow", False),
    ("not live", False),
    ("live or slow", False),
    ("not slow and not live", False),
    ("live and (", False),  # pytest reports the bad expression itself; nothing is skipped silently
])
def test_only_expressions_that_select_nothing_here_skip_the_tree(expression, skipped):
    assert selects_nothing_here(expression) is skipped
