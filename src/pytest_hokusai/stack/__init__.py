"""The local Hokusai reference stack: a real MLflow server behind an auth service and an
authenticating proxy that follow the platform's contract, with fault switches.

Public entry point: :func:`start_stack` (imported lazily, so ``import pytest_hokusai.stack``
stays cheap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .launcher import Stack, start_stack

__all__ = ["Stack", "start_stack"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
