"""The report layer's last line of defence against leaked keys."""

from __future__ import annotations

from typing import Any

from ..secret import KEY_SHAPED, redact

__all__ = ["KEY_LIKE", "scrub", "scrub_obj"]

#: Anything shaped like a Hokusai key (the pattern :func:`~pytest_hokusai.secret.redact` masks).
KEY_LIKE = KEY_SHAPED


def scrub(text: str) -> str:
    """Mask every key this process knows (:func:`~pytest_hokusai.secret.redact`) and anything else
    shaped like a Hokusai key (``hk_live_`` + 16 or more alphanumerics).

    >>> scrub("key=" + "hk_test_" + "Z" * 30 + "abcd")
    'key=hk_test_…abcd'
    """
    return redact(text)


def scrub_obj(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, scalars) with every string scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)) if isinstance(k, str) else k: scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_obj(v) for v in value]
    return value
