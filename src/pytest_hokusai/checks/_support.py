"""Small helpers shared by the checks (assertion messages that show the evidence, per-check data),
and the warning filters every check carries so that it behaves the same in any host project."""

from __future__ import annotations

from typing import Any

import pytest

from ..evidence import Exchange

#: Warning filters on every shipped check (each module's ``pytestmark``). A host project may run
#: with ``filterwarnings = error`` or ``-W error``; these warnings come from libraries the checks
#: drive, say nothing about the deployment, and would otherwise turn a healthy check into an error.
#: Each names what it silences and why; everything else still follows the host's settings.
HOST_SAFE_FILTERS = [
    # MLflow (>= 2.20) infers the toy model's signature from type hints and warns, in yellow (the
    # message starts with an ANSI colour code, hence the leading .*), that `Any` is not validated.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
    # MLflow and the packaging helpers it imports emit deprecation notices about their own
    # internals when the client is imported or used: not the deployment's, not the host's to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pkg_resources.*"),
    pytest.mark.filterwarnings("ignore:.*pkg_resources.*:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*pkg_resources.*:UserWarning"),
]


def record(request: Any, name: str, value: object) -> None:
    """Attach ``name = value`` to the running check's report (``user_properties``).

    Used instead of pytest's ``record_property`` fixture, which warns under JUnit's default
    ``xunit2`` family (an error in projects with ``filterwarnings = error``). The plugin writes these
    where the JUnit family accepts them: on the test case for xunit1, as test-suite properties for
    xunit2 (see :mod:`pytest_hokusai.host`).
    """
    request.node.user_properties.append((name, value))


def describe(result: Any) -> str:
    """One line of evidence for a probe result or a response."""
    exchange: Exchange | None = getattr(result, "exchange", None)
    if exchange is not None:
        return exchange.summary()
    return repr(result)


def json_detail(result: Any) -> Any:
    """The ``detail`` of a JSON error body, or None."""
    body = getattr(result, "json", None)
    if isinstance(body, dict):
        return body.get("detail")
    return None


def keep_leftovers(hokusai_run, leftovers) -> None:
    """Record what a check could not remove (listed in every report); never fails the check."""
    for leftover in leftovers:
        hokusai_run.state.add_leftover(leftover)
