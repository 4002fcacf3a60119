"""The report layer's last line of defence against leaked keys."""

from __future__ import annotations

import re
from typing import Any

from ..secret import mask, redact

__all__ = ["KEY_LIKE", "scrub", "scrub_obj"]

#: Anything shaped like a Hokusai key, known to this process or not.
KEY_LIKE = re.compile(r"hk_(?:live|test|dev)_[A-Za-z0-9]{16,}")


def scrub(text: str) -> str:
    """Mask every key this process knows (:func:`~pytest_hokusai.secret.redact`) and anything else
    shaped like a Hokusai key (``hk_live_`` + 16 or more alphanumerics).

    >>> scrub("key=" + "hk_test_" + "Z" * 30 + "abcd")
    'key=hk_test_…abcd'
    """
    if not text:
        return text
    return KEY_LIKE.sub(lambda m: mask(m.group(0)), redact(text))


def scrub_obj(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, scalars) with every string scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)) if isinstance(k, str) else k: scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_obj(v) for v in value]
    return value
