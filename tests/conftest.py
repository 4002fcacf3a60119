"""This repository's own tests, as seen from a ``-m`` selection.

``pytest -m live`` run from the checkout (the README's main job, and the QA engineer's loop against
a running stack) selects only the shipped checks under ``src/pytest_hokusai/checks``: no test here
carries ``live`` or a ``hokusai_*`` marker. Collecting this tree anyway imports 700-odd tests' modules
(about 2 s on two cores, a third of an attached run) to deselect all of them, so it is skipped when
the ``-m`` expression is false for every combination of the markers tests here can carry.
``tests/unit/test_repo_markers.py`` keeps :data:`REPO_TEST_MARKERS` equal to what the tests use.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

#: Every marker a test in this tree carries (checked by tests/unit/test_repo_markers.py).
REPO_TEST_MARKERS = frozenset({"parametrize", "skipif", "slow", "timeout"})
_HERE = Path(__file__).parent


def selects_nothing_here(markexpr: str) -> bool:
    """Whether the ``-m`` expression is false for a test with any subset of :data:`REPO_TEST_MARKERS`."""
    if not markexpr.strip():
        return False
    try:
        from _pytest.mark.expression import Expression  # pytest's own -m parser; no public one

        expression = Expression.compile(markexpr)
        markers = sorted(REPO_TEST_MARKERS)
        subsets = itertools.chain.from_iterable(itertools.combinations(markers, n) for n in range(len(markers) + 1))
        return not any(expression.evaluate(lambda name, chosen=frozenset(s), **_: name in chosen)
                       for s in subsets)
    except Exception:  # noqa: BLE001 - a parser that changed, or a bad expression pytest reports itself: collect
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path != _HERE and selects_nothing_here(config.option.markexpr or ""):
        return True
    return None
