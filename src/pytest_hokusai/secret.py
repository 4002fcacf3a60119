"""The Hokusai API key as a secret value that never prints.

A :class:`Secret` shows only its masked form (``hk_live_…wxyz``) in ``repr``, ``str``, f-strings
and ``format``; it refuses to be pickled; the raw value is available only through
:meth:`Secret.reveal`, which the HTTP layer calls at the single place where the key is sent.

Every Secret created in this process registers its raw value with :func:`redact`, so any text
(tracebacks, captured output, log records, reports) can be scrubbed of every key the run knows.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations only, never imported at run time
    from typing_extensions import Self

from .errors import KeyFormatError

__all__ = [
    "KEY_PATTERN",
    "KEY_PREFIXES",
    "KEY_SHAPED",
    "Secret",
    "SecretUrl",
    "mask",
    "mask_url",
    "redact",
]

#: Key environments the platform documents (contract section 3).
KEY_PREFIXES = ("hk_live_", "hk_test_", "hk_dev_")
#: Real keys are ``hk_live_`` + 32 alphanumerics; the platform repo's own generator makes 40
#: (contract section 3, "Key formats"). Anything outside that is reported as KEY_MALFORMED.
KEY_PATTERN = re.compile(r"^hk_(live|test|dev)_([A-Za-z0-9]{32,40})$")
_ELLIPSIS = "\u2026"
#: Anything shaped like a Hokusai key (prefix + 16 or more alphanumerics), known to this process or not.
KEY_SHAPED = re.compile(r"hk_(?:live|test|dev)_[A-Za-z0-9]{16,}")

_registry_lock = threading.Lock()
_registry: dict[str, str] = {}  # secret part -> masked form


def mask(raw: str) -> str:
    """Return the masked form of a raw key: its prefix, an ellipsis and its last four characters.

    >>> mask("hk_live_" + "a" * 28 + "wxyz")
    'hk_live_…wxyz'
    """
    for prefix in KEY_PREFIXES:
        if raw.startswith(prefix):
            body = raw[len(prefix):]
            return f"{prefix}{_ELLIPSIS}{body[-4:]}" if len(body) > 8 else f"{prefix}{_ELLIPSIS}"
    if len(raw) > 12:
        return f"{_ELLIPSIS}{raw[-4:]}"
    return _ELLIPSIS


def _register(raw: str, masked: str) -> None:
    body = raw
    for prefix in KEY_PREFIXES:
        if raw.startswith(prefix):
            body = raw[len(prefix):]
            break
    with _registry_lock:
        _registry[raw] = masked
        # The secret part alone (without the prefix) is scrubbed too, if long enough to be
        # unambiguous: it can show up URL-joined or split from its prefix.
        if len(body) >= 12:
            _registry[body] = _ELLIPSIS + body[-4:]


def redact(text: str) -> str:
    """Replace every occurrence of every key created in this process by its masked form.

    Any key-shaped text (``hk_live_`` + 16 or more letters and digits) is masked whole first; then
    registered values, longest first, so a stray secret part becomes ``…wxyz``.
    """
    if not text:
        return text
    # Anything shaped like a key is masked whole first (even a key this process never saw), so a
    # registered secret part can never leave half a key behind.
    text = KEY_SHAPED.sub(lambda m: mask(m.group(0)), text)
    with _registry_lock:
        items = sorted(_registry.items(), key=lambda kv: len(kv[0]), reverse=True)
    for raw, masked in items:
        if raw in text:
            text = text.replace(raw, masked)
    return text


class _MaskedValue:
    """A value that is a credential: every view of it is the masked form; only :meth:`reveal` gives
    the raw value. Shared by :class:`Secret` (an API key) and :class:`SecretUrl` (a webhook URL)."""

    __slots__ = ("_masked", "_raw")
    _raw: str
    _masked: str
    #: why pickling is refused, and what to do instead
    _PICKLE_REFUSAL = "it would write the raw value"

    def _set(self, raw: str, masked: str) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_masked", masked)

    def reveal(self) -> str:
        """Return the raw value. Call this only where it is put on the wire."""
        return self._raw

    @property
    def masked(self) -> str:
        """The masked form, e.g. ``hk_live_…wxyz`` or ``https://hooks.slack.com/…``."""
        return self._masked

    # -- never the raw value ---------------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._masked!r})"

    def __str__(self) -> str:
        return self._masked

    def __format__(self, spec: str) -> str:
        return format(self._masked, spec)

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            assert isinstance(other, _MaskedValue)
            return self._raw == other._raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} cannot be pickled: {self._PICKLE_REFUSAL}")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


class Secret(_MaskedValue):
    """An API key that shows only its masked form.

    >>> key = Secret("hk_live_" + "A1" * 14 + "wxyz")
    >>> key
    Secret('hk_live_…wxyz')
    >>> f"{key}"
    'hk_live_…wxyz'
    >>> key.reveal()[:8]
    'hk_live_'
    """

    __slots__ = ("_source",)
    _source: str
    _PICKLE_REFUSAL = "it would write the raw API key; pass the key through the environment instead"

    def __init__(self, raw: str, *, source: str = "value") -> None:
        if not isinstance(raw, str):
            raise TypeError(f"Secret needs a str, not {type(raw).__name__}")
        raw = raw.strip()
        self._set(raw, mask(raw))
        object.__setattr__(self, "_source", source)
        if raw:
            _register(raw, self._masked)

    # -- safe views ------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """Where the key came from (for messages): e.g. ``env HOKUSAI_API_KEY``."""
        return self._source

    @property
    def environment(self) -> str | None:
        """``live``, ``test`` or ``dev`` for a well-formed key, else ``None``."""
        m = KEY_PATTERN.match(self._raw)
        return m.group(1) if m else None

    @property
    def fingerprint(self) -> str:
        """A short, stable, non-reversible identifier: ``sha256:`` + 12 hex digits."""
        return "sha256:" + hashlib.sha256(self._raw.encode()).hexdigest()[:12]

    def is_well_formed(self) -> bool:
        """Whether the key matches ``hk_(live|test|dev)_`` + 32 to 40 alphanumerics."""
        return KEY_PATTERN.match(self._raw) is not None

    def format_problem(self) -> str | None:
        """Why the key is malformed, in one sentence without the key, or ``None`` if it is fine."""
        raw = self._raw
        if not raw:
            return "the key is empty"
        if not raw.startswith(KEY_PREFIXES):
            return "the key does not start with hk_live_, hk_test_ or hk_dev_"
        body = raw.split("_", 2)[2] if raw.count("_") >= 2 else ""
        if not body.isalnum() or not body.isascii():
            return "after its prefix the key must hold only letters and digits (no spaces, quotes or symbols)"
        if not 32 <= len(body) <= 40:
            return f"after its prefix the key has {len(body)} characters; Hokusai keys have 32 to 40"
        return None

    def validate(self) -> Secret:
        """Return self if well formed, else raise :class:`KeyFormatError` naming the source."""
        problem = self.format_problem()
        if problem:
            raise KeyFormatError(f"Malformed Hokusai API key {self._masked} from {self._source}: {problem}")
        return self

    def redact(self, text: str) -> str:
        """Replace this key (and its secret part) in ``text`` with the masked form."""
        return redact(text)

    def __bool__(self) -> bool:
        return bool(self._raw)


def mask_url(url: str) -> str:
    """A URL with its path and query masked: ``https://hooks.slack.com/…`` (scheme, host, port kept).

    Webhook URLs carry their credential in the path (Slack: ``/services/T…/B…/secret``) or the query.

    >>> mask_url("https://hooks.example.com/services/T0/B0/xyz?token=abc")
    'https://hooks.example.com/…'
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return _ELLIPSIS
    if not parts.scheme or not host:
        return _ELLIPSIS
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}/{_ELLIPSIS}"


class SecretUrl(_MaskedValue):
    """A URL that is a credential (a webhook): shows only :func:`mask_url`'s form, like :class:`Secret`.

    Creating one registers the URL, its path and its query with :func:`redact`, so any text that
    quotes them (an error message, a traceback, a report) shows the masked form instead.
    """

    __slots__ = ()
    _PICKLE_REFUSAL = "it would write the raw URL"

    def __init__(self, raw: str) -> None:
        from urllib.parse import urlsplit

        raw = raw.strip()
        self._set(raw, mask_url(raw))
        with _registry_lock:
            _registry[raw] = self._masked
            try:
                parts = urlsplit(raw)
            except ValueError:
                return
            # the path and the query alone are scrubbed too (they are the credential); only when long
            # enough not to collide with ordinary text such as "/" or "/hook"
            for piece in (parts.path, parts.query, parts.path + ("?" + parts.query if parts.query else "")):
                if len(piece) >= 8:
                    _registry[piece] = "/" + _ELLIPSIS if piece.startswith("/") else _ELLIPSIS

