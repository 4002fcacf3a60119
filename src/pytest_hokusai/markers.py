"""The markers pytest-hokusai registers: ``live`` plus one namespaced marker per concern."""

from __future__ import annotations

__all__ = ["CONCERN_MARKERS", "MARKERS", "concern_names"]

#: marker name -> one-sentence description (shown by ``pytest --markers``)
MARKERS: dict[str, str] = {
    "live": "talks to a Hokusai deployment (remote, or the local stack with --hokusai-target=local); "
            "selected with -m live",
    "hokusai_auth": "checks the auth service directly: health, key validation in both styles, contract",
    "hokusai_bearer": "checks how the proxy accepts the key: no key, Bearer, ApiKey, X-API-Key, MLflow client",
    "hokusai_proxy": "checks the API service and its MLflow proxy: health, routes, discovery matrix, deletes "
                     "through the proxy",
    "hokusai_registration": "checks the full train, log, register, verify, load-back flow through the proxy",
    "hokusai_edge": "checks edge cases: bad, unknown, revoked, expired and read-only keys; concurrency; large models",
    "hokusai_perf": "checks latency and registration time against the hokusai_budget_* settings",
    "hokusai_sdk": "checks registration through the hokusai-ml-platform SDK (skips when it is not installed)",
}
CONCERN_MARKERS = tuple(name for name in MARKERS if name.startswith("hokusai_"))


def concern_names(keywords: object) -> list[str]:
    """Marker names of a report, for the JSON report: ``live`` and concern names without prefix."""
    names = []
    for name in MARKERS:
        try:
            present = name in keywords  # type: ignore[operator]
        except TypeError:
            present = False
        if present:
            names.append(name.removeprefix("hokusai_"))
    return names
