"""What every matcher returns (:class:`Match`) and the readings of the evidence several share.

The helpers read only what counts as the deployment's answer: the checks' exchanges made with the
primary key, in an accepted style, to the MLflow REST API under the tracking URI
(:func:`keyed_tracking`), and the direct key validations (:func:`validations`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ...evidence import Exchange
from .. import tells as t
from ..evidence import TriageEvidence, host_of

__all__ = [
    "REJECTION_STATUSES",
    "Match",
    "Matcher",
    "exchanges_by_host",
    "first_match",
    "keyed_tracking",
    "proxy_auth_failure",
    "proxy_invalid_key",
    "quoted",
    "said",
    "settings_by_host",
    "settings_of",
    "validations",
    "where",
]


@dataclass
class Match:
    """What a matcher found: a one-sentence summary, the evidence, and a specific remediation."""

    summary: str
    evidence: Sequence[Exchange | str | None] = ()  #: ``None`` items are dropped
    remediation: str = ""  #: empty: the rule's generic fix


Matcher = Callable[[TriageEvidence], "Match | None"]

#: The statuses of an auth service or proxy that refuses a key (rather than failing itself).
REJECTION_STATUSES = (400, 401, 403, 415, 422)


def quoted(text: str) -> str:
    """``'text'``, or ``an empty body``."""
    return f"'{text}'" if text else "an empty body"


def said(ex: Exchange) -> str:
    """``404 'Not Found'`` / ``refused``: what an exchange got, short."""
    if ex.status is None:
        return ex.error or "no answer"
    return f"{ex.status} {quoted(t.detail(ex, 100))}"


def where(ex: Exchange) -> str:
    """``GET /api/mlflow/api/2.0/mlflow/experiments/search``: method and path, no host or query."""
    return f"{ex.method} {t.path_of(ex.url)}"


def settings_by_host(e: TriageEvidence) -> dict[str, list[str]]:
    """host -> the URL settings (``api-url``, ``auth-url``, ...) that point at it."""
    names: dict[str, list[str]] = {}
    for setting, url in (("api-url", e.api_url), ("auth-url", e.auth_url), ("tracking-uri", e.tracking_uri),
                         ("direct-mlflow-url", e.direct_mlflow_url)):
        if url:
            names.setdefault(host_of(url), []).append(setting)
    return names


def settings_of(e: TriageEvidence, host: str) -> list[str]:
    """The URL settings that point at ``host``."""
    return settings_by_host(e).get(host, [])


def exchanges_by_host(e: TriageEvidence) -> dict[str, list[Exchange]]:
    """Every exchange, grouped by the configured host it went to (other hosts left out)."""
    grouped: dict[str, list[Exchange]] = {h: [] for h in settings_by_host(e)}
    for ex in e.all_exchanges():
        host = host_of(ex.url)
        if host in grouped:
            grouped[host].append(ex)
    return grouped


def keyed_tracking(e: TriageEvidence) -> list[Exchange]:
    """The exchanges made with the primary key to the MLflow REST API under the tracking URI."""
    return [x for x in e.keyed_exchanges() if e.is_tracking(x)]


def validations(e: TriageEvidence, style: str | None = None) -> list[tuple[str, str | None, Exchange]]:
    """The direct key validations ``(style, service_id, exchange)``, of one style if given."""
    return [v for v in e.validations() if style is None or v[0] == style]


def proxy_auth_failure(e: TriageEvidence) -> Exchange | None:
    """The keyed proxy exchange whose detail is 'Authentication service ...', if any."""
    return next((x for x in keyed_tracking(e) if x.status in (401, 503)
                 and t.detail(x).startswith(t.AUTH_SERVICE_PREFIX)), None)


def proxy_invalid_key(e: TriageEvidence) -> Exchange | None:
    """The keyed proxy exchange refused with 401 'Invalid or expired API key', if any."""
    return next((x for x in keyed_tracking(e) if x.status == 401 and t.INVALID_KEY.lower() in
                 t.detail(x).lower()), None)


def first_match(exs: Iterable[Exchange], test: Callable[[Exchange], bool]) -> Exchange | None:
    """The first exchange that passes ``test``, or ``None``."""
    return next((x for x in exs if test(x)), None)
