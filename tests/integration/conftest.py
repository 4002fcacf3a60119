"""Integration fixtures: one real local stack per test process, shared by every test that needs it.

``stack`` (session scope) starts MLflow, the auth service and the API service once and stops
them at the end of the session; ``healthy_stack`` (function scope) is the same stack, with its
faults switched back to none after each test, for tests that turn faults on.

Under pytest-xdist every worker starts its own stack (free ports, its own data dir): a stack
shared between workers would be stopped by whichever worker finishes first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_hokusai.stack.launcher import Stack

@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's local stack (:class:`pytest_hokusai.stack.launcher.Stack`), healthy at start.

    Scope: session. Data dir (logs, SQLite files, artifacts) under pytest's basetemp, so the logs
    of a failed run stay inspectable.
    """
    from pytest_hokusai.stack import start_stack

    with start_stack(data_dir=tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
def healthy_stack(stack: Stack) -> Iterator[Stack]:
    """The session stack; whatever faults a test switches on are switched off after it.

    Scope: function.
    """
    if stack.faults:
        stack.set_faults([])
    yield stack
    stack.set_faults([])
