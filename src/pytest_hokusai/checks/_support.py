"""Small helpers shared by the checks (assertion messages that show the evidence)."""

from __future__ import annotations

from typing import Any

from ..evidence import Exchange


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
