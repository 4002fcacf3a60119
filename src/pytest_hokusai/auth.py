"""Client for the Hokusai auth service: health and key validation in both styles.

* **header** style is what the platform's API middleware sends (contract section 2.3):
  ``POST {auth}/api/v1/keys/validate`` with ``Authorization: Bearer <key>`` and the body
  ``{"service_id": ..., "client_ip": ...}`` (``client_ip`` only when given), never ``api_key``.
* **body** style is the published spec's (section 2.1): the body ``{"api_key": ..., "service_id": ...}``
  and no Authorization header.

``service_id`` is left out of the body when ``None``, so "validates with no service_id" can be
told from "validates with platform" (diagnosis SERVICE_ID_REJECTED, F4).

:data:`VALIDATION_RESULT_SCHEMA` and :func:`check_validation_result` describe the 200 body
(``ValidationResult``) from the contract's facts; the plugin's contract check uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .evidence import Exchange
from .http import HokusaiSession, ProbeResult, scrub
from .secret import Secret

__all__ = [
    "MISSING",
    "VALIDATE_PATH",
    "VALIDATION_RESULT_SCHEMA",
    "AuthClient",
    "ValidationOutcome",
    "check_validation_result",
    "parse_registered_service",
    "parse_valid_service_ids",
]

VALIDATE_PATH = "/api/v1/keys/validate"
HEALTH_PATH = "/health"


class _Missing:
    """Sentinel type: "use the client's configured service_id" (one instance: :data:`MISSING`)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: Pass as ``service_id`` to use the client's configured one (the default).
MISSING = _Missing()

_NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}
_NULLABLE_INT: dict[str, Any] = {"type": ["integer", "null"]}
#: The ``ValidationResult`` of ``POST /api/v1/keys/validate`` (contract 2.1 and the spec): only
#: ``is_valid`` is required; extra fields (``email``, ``roles``, ``is_admin``, ...) are allowed.
VALIDATION_RESULT_SCHEMA: dict[str, Any] = {
    "title": "ValidationResult",
    "type": "object",
    "required": ["is_valid"],
    "properties": {
        "is_valid": {"type": "boolean"},
        "key_id": _NULLABLE_STR,
        "user_id": _NULLABLE_STR,
        "service_id": _NULLABLE_STR,
        "scopes": {"type": ["array", "null"], "items": {"type": "string"}},
        "rate_limit_per_hour": _NULLABLE_INT,
        "billing_plan": _NULLABLE_STR,
        "monthly_prediction_limit": _NULLABLE_INT,
        "error": _NULLABLE_STR,
    },
    "additionalProperties": True,
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types):
            return name
    return type(value).__name__


def _matches(value: Any, allowed: str | list[str]) -> bool:
    names = [allowed] if isinstance(allowed, str) else allowed
    for name in names:
        if isinstance(value, bool) and name in ("integer", "number"):
            continue  # JSON true is not a number
        if isinstance(value, _JSON_TYPES[name]):
            return True
    return False


def _describe_type(allowed: str | list[str]) -> str:
    names = [allowed] if isinstance(allowed, str) else allowed
    return " or ".join(names)


def check_validation_result(obj: Any, schema: dict[str, Any] = VALIDATION_RESULT_SCHEMA) -> list[str]:
    """Problems of ``obj`` against :data:`VALIDATION_RESULT_SCHEMA`, one sentence each (empty: fine).

    >>> check_validation_result({"is_valid": True, "scopes": ["read"]})
    []
    >>> check_validation_result({"scopes": "read"})
    ['missing required field is_valid', 'scopes must be array or null, got string']
    """
    if not isinstance(obj, dict):
        return [f"a ValidationResult must be a JSON object, got {_type_name(obj)}"]
    problems = [f"missing required field {name}" for name in schema.get("required", []) if name not in obj]
    for name, prop in schema.get("properties", {}).items():
        if name not in obj:
            continue
        value = obj[name]
        if not _matches(value, prop["type"]):
            problems.append(f"{name} must be {_describe_type(prop['type'])}, got {_type_name(value)}")
            continue
        items = prop.get("items")
        if items and isinstance(value, list):
            bad = [i for i, item in enumerate(value) if not _matches(item, items["type"])]
            if bad:
                problems.append(f"{name}[{bad[0]}] must be {_describe_type(items['type'])}, "
                                f"got {_type_name(value[bad[0]])}")
    if schema.get("additionalProperties") is False:
        extra = sorted(set(obj) - set(schema.get("properties", {})))
        if extra:
            problems.append(f"unexpected fields: {', '.join(extra)}")
    return problems


# -- reading 401 details ------------------------------------------------------------------------
_ID = r"[`'\"]?([A-Za-z0-9][A-Za-z0-9_.:-]*?)[`'\"]?(?=[\s,.;:)\]}]|$)"
_REGISTERED_PATTERNS = tuple(re.compile(p, re.IGNORECASE) for p in (
    # "registered for service 'platform'", "registered to the service platform", "registered service: x"
    r"registered\s+(?:for|to|with|under|in)?\s*(?:the\s+)?service(?:[ _]?id)?\s*(?:is|of|=|:)?\s*" + _ID,
    # "key's service is 'platform'", "key service_id: platform"
    r"key(?:'s)?\s+service(?:[ _]?id)?\s*(?:is|=|:)\s*" + _ID,
    # "belongs to service 'platform'", "is valid for service platform", "issued for the platform service"
    r"\b(?:belongs\s+to|valid\s+(?:only\s+)?for|issued\s+for|scoped\s+to)\s+(?:the\s+)?service(?:[ _]?id)?\s*" + _ID,
    r"\b(?:belongs\s+to|valid\s+(?:only\s+)?for|issued\s+for|registered\s+for|scoped\s+to)\s+(?:the\s+)?"
    + _ID + r"\s+service\b",
))
_STOPWORDS = {"is", "the", "a", "an", "id", "service", "service_id", "and", "or", "not", "to", "for"}
_VALID_LIST = re.compile(
    r"\b(?:valid|allowed|accepted|known)\s+(?:service\s*)?(?:ids?|services?|service_ids?)\s*(?:are|is|=|:)?\s*"
    r"[\[(]?((?:[`'\"]?[A-Za-z0-9_.-]+[`'\"]?\s*(?:,|\bor\b|\band\b)?\s*)+)", re.IGNORECASE)


def parse_registered_service(detail: Any) -> str | None:
    """The key's registered service named by an auth-service 401 detail, or ``None``.

    Lenient with wording and with structured details:

    >>> parse_registered_service("Invalid service_id 'ml-platform'; key is registered for service 'platform'")
    'platform'
    >>> parse_registered_service({"registered_service": "website"})
    'website'
    >>> parse_registered_service("Invalid or expired API key") is None
    True
    """
    if isinstance(detail, dict):
        for name in ("registered_service", "registered_service_id", "key_service_id", "key_service"):
            value = detail.get(name)
            if isinstance(value, str) and value:
                return value
        for name in ("message", "detail", "error"):
            if name in detail:
                found = parse_registered_service(detail[name])
                if found:
                    return found
        return None
    if not isinstance(detail, str):
        return None
    for pattern in _REGISTERED_PATTERNS:
        for match in pattern.finditer(detail):
            value = match.group(1).strip("'\"`.,")
            if value and value.lower() not in _STOPWORDS:
                return value
    return None


def parse_valid_service_ids(detail: Any) -> list[str]:
    """Service ids a 401 detail lists as valid (``"Valid IDs: platform, website"``), else ``[]``."""
    if isinstance(detail, dict):
        for name in ("valid_service_ids", "valid_services", "allowed_service_ids"):
            value = detail.get(name)
            if isinstance(value, list):
                return [str(v) for v in value]
        detail = " ".join(str(detail.get(n, "")) for n in ("message", "detail", "error"))
    if not isinstance(detail, str):
        return []
    match = _VALID_LIST.search(detail)
    if not match:
        return []
    words = re.split(r"\s*(?:,|\bor\b|\band\b)\s*", match.group(1))
    return [w.strip(" '\"`") for w in words if w.strip(" '\"`") and w.strip(" '\"`").lower() not in _STOPWORDS]


# -- the client -----------------------------------------------------------------------------------
@dataclass
class ValidationOutcome:
    """The answer to one validation call.

    ``ok`` is True only for a 200 whose body is a JSON object with ``is_valid: true``;
    ``accepted_by_middleware`` is what the real API middleware would accept (any 200 object,
    ``is_valid`` unchecked: F30).
    """

    style: str
    service_id: str | None  #: the service_id sent (None: omitted)
    exchange: Exchange
    status: int | None = None
    result: dict[str, Any] | None = None  #: the 200 body, when it was a JSON object
    detail: str | None = None  #: the error body's ``detail`` (401/422), as text
    registered_service: str | None = None  #: the key's service, when a 401 detail names it
    valid_service_ids: list[str] = field(default_factory=list)
    problem: str | None = None  #: why the body could not be read as JSON, if it could not

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.result, dict) and self.result.get("is_valid") is True

    @property
    def accepted_by_middleware(self) -> bool:
        return self.status == 200 and isinstance(self.result, dict)

    @property
    def error(self) -> str | None:
        """The network error class when no status came back (``timeout``, ``refused``, ...)."""
        return self.exchange.error

    def summary(self) -> str:
        sent = "no service_id" if self.service_id is None else f"service_id {self.service_id!r}"
        return f"validate ({self.style} style, {sent}): {self.exchange.summary()}"


class AuthClient:
    """Calls the auth service through a :class:`HokusaiSession` (so every call is evidence).

    >>> client = AuthClient("https://auth.hokus.ai", session, service_id="platform")  # doctest: +SKIP
    >>> client.validate(key, style="body", service_id=None).ok  # doctest: +SKIP
    True
    """

    def __init__(self, base_url: str, session: HokusaiSession, service_id: str | None = "platform") -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.service_id = service_id

    @property
    def validate_url(self) -> str:
        return self.base_url + VALIDATE_PATH

    def health(self, *, timeout: float | None = None, label: str = "auth:health") -> ProbeResult:
        """``GET {auth}/health`` without a key; never raises for network errors."""
        return self.session.probe("GET", self.base_url + HEALTH_PATH, key=None, label=label, timeout=timeout)

    def validate(
        self,
        key: Secret | None,
        *,
        style: Literal["header", "body"] = "header",
        service_id: str | None | _Missing = MISSING,
        client_ip: str | None = None,
        timeout: float | None = None,
        label: str | None = None,
    ) -> ValidationOutcome:
        """Validate ``key`` the way the API middleware does (``header``) or the spec says (``body``).

        ``service_id``: MISSING uses the client's, ``None`` leaves it out of the body. ``key=None``
        sends no key at all. Never raises for network errors (see ``outcome.error``).
        """
        if style not in ("header", "body"):
            raise ValueError(f"style must be 'header' or 'body', not {style!r}")
        sid = self.service_id if isinstance(service_id, _Missing) else service_id
        body: dict[str, Any] = {}
        if sid is not None:
            body["service_id"] = sid
        if client_ip is not None:
            body["client_ip"] = client_ip
        probe = self.session.probe(
            "POST", self.validate_url, key=key, style="bearer" if style == "header" else "body",
            json=body, timeout=timeout,
            label=label or f"auth:validate:{style}:{'no-service-id' if sid is None else sid}",
        )
        outcome = ValidationOutcome(style=style, service_id=sid, exchange=probe.exchange, status=probe.status)
        if probe.response is None:
            return outcome
        data = probe.json
        if probe.json_problem and probe.status is not None:
            outcome.problem = probe.json_problem
        if probe.status == 200 and isinstance(data, dict):
            outcome.result = data
        if isinstance(data, dict) and "detail" in data:
            raw_detail = data["detail"]
            outcome.detail = probe.detail()
            outcome.registered_service = parse_registered_service(raw_detail)
            outcome.valid_service_ids = parse_valid_service_ids(raw_detail)
        elif probe.status != 200 and probe.response is not None and not probe.exchange.is_json:
            outcome.detail = scrub(probe.exchange.body_excerpt) or None
        return outcome
