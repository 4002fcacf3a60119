"""The hand-off tables: who fixes each diagnosis code, and what it breaks for third parties.

Keyed by the codes of :data:`.catalog.CODES` (the one list of codes; a unit test asserts that every
code has an owner and an impact). Read by the JSON report (``owner``), the issue reports and the
troubleshooting guide.
"""

from __future__ import annotations

from .catalog import TEXTS

__all__ = ["ANNOUNCED_CODES", "IMPACTS", "OWNERS", "OWNER_TEAMS", "impact_of", "owner_of"]

#: The teams a finding is addressed to, with what each one owns.
OWNER_TEAMS: dict[str, str] = {
    "auth-service": "the auth service (key validation, its database, /api/v1/keys/*)",
    "api-service": "the API service (auth middleware, MLflow proxy, their settings and deployment)",
    "infrastructure": "the load balancer, DNS, TLS certificates and network paths",
    "mlflow": "the MLflow server (its settings, artifact serving, its reachability)",
    "client": "the client side: SDK, MLflow client and CI set-up (environment, URLs, installed versions)",
    "key-owner": "whoever holds the API key (its scopes, expiry, account balance and limits)",
}

#: Codes announced by parallel changes (TEAM.md, "Shared names") before they were in TEXTS: their owner
#: and impact could be set here ahead of them. All three have landed; the tests still allow entries for
#: announced codes, so the next parallel change can do the same.
ANNOUNCED_CODES: frozenset[str] = frozenset({"PROXY_DROPS_REQUEST_BODY", "NOT_HOKUSAI_API", "SUITE_ERROR"})

#: The team that fixes each code. Every code needs one (a unit test asserts it): a code added
#: without an owner fails that test until it gets one here.
OWNERS: dict[str, str] = {
    "HOST_UNREACHABLE": "infrastructure",
    "TLS_ERROR": "infrastructure",
    "API_SERVICE_DOWN": "api-service",
    "ROUTE_NOT_CONFIGURED": "infrastructure",
    "PROXY_ROUTE_NOT_MOUNTED": "api-service",
    "MLFLOW_PATH_MISMATCH": "api-service",
    "MLFLOW_UNREACHABLE": "mlflow",
    "AUTH_SERVICE_DOWN": "auth-service",
    "AUTH_SERVICE_MISROUTED": "infrastructure",
    "SERVICE_ID_REJECTED": "api-service",
    "AUTH_CONTRACT_MISMATCH": "auth-service",
    "PROXY_STRIPS_AUTH": "api-service",
    "ARTIFACTS_DISABLED": "mlflow",
    "HOST_HEADER_REJECTED": "mlflow",
    "KEY_MISSING": "client",
    "KEY_MALFORMED": "client",
    "KEY_REJECTED": "key-owner",
    "KEY_LACKS_WRITE_SCOPE": "key-owner",
    "REGISTRY_ADMIN_REQUIRED": "key-owner",
    "PAYMENT_REQUIRED": "key-owner",
    "RATE_LIMITED": "key-owner",
    "AUTH_BYPASS": "api-service",
    "REVOCATION_DELAYED": "api-service",
    "CLIENT_TOKEN_LOST": "client",
    "LATENCY_BUDGET_EXCEEDED": "api-service",
    "UNEXPECTED_RESPONSE": "api-service",
    # announced codes (see ANNOUNCED_CODES)
    "PROXY_DROPS_REQUEST_BODY": "api-service",
    "NOT_HOKUSAI_API": "client",
    "SUITE_ERROR": "client",
    # the SDK codes (issue 11)
    "SDK_EVENT_ROUTE_MISSING": "api-service",
    "SDK_EVENT_REJECTED": "api-service",
    "SDK_STEP_FAILED": "client",
}

#: What each code breaks for third parties, in one sentence (the issue reports' "Impact").
IMPACTS: dict[str, str] = {
    "HOST_UNREACHABLE": "No third party can reach the platform at all: every MLflow client call and every SDK "
    "call fails with a connection error.",
    "TLS_ERROR": "Every third-party client refuses the connection (certificate error), so nobody can log or "
    "register a model.",
    "API_SERVICE_DOWN": "Every call through the API, the MLflow tracking URI included, fails, so no third party "
    "can log or register a model.",
    "ROUTE_NOT_CONFIGURED": "The tracking URI third parties are told to use answers 404 for everything, so no "
    "MLflow client call succeeds.",
    "PROXY_ROUTE_NOT_MOUNTED": "Every MLflow client call with a valid key gets 404 'Not Found', so no third party "
    "can log or register a model.",
    "MLFLOW_PATH_MISMATCH": "Authenticated MLflow client calls get RESOURCE_NOT_FOUND, so third parties cannot "
    "create experiments, runs or models.",
    "MLFLOW_UNREACHABLE": "Every MLflow client call gets 502/504 and the client retries for minutes before it "
    "fails, so third-party registration hangs and then fails.",
    "AUTH_SERVICE_DOWN": "No key can be validated, so every third-party call through the API is refused (the "
    "MLflow client retries the 503 for minutes first).",
    "AUTH_SERVICE_MISROUTED": "Key validation never reaches the auth service, so every third-party call through "
    "the API fails after a timeout.",
    "SERVICE_ID_REJECTED": "Every valid key is refused with 401 'Invalid or expired API key', so no third party "
    "can use the registry.",
    "AUTH_CONTRACT_MISMATCH": "The proxy's key validation fails for every key, so no third party can use the "
    "registry.",
    "PROXY_STRIPS_AUTH": "Calls that carry a valid key are refused behind the proxy with 'API key required', so "
    "third parties cannot use the registry.",
    "ARTIFACTS_DISABLED": "Third parties can create runs and models but cannot upload or download model files, "
    "so log_model and registration fail.",
    "HOST_HEADER_REJECTED": "MLflow refuses every proxied call with a text/plain 403, so no third party can use "
    "the registry.",
    "KEY_MISSING": "Nothing was tested: this run had no key (third parties are affected only if they miss "
    "theirs too).",
    "KEY_MALFORMED": "Nothing was sent: the configured key is not a Hokusai key, so any client using it is "
    "refused.",
    "KEY_REJECTED": "Whoever uses this key is refused everywhere (invalid, expired or revoked); other keys may "
    "work.",
    "KEY_LACKS_WRITE_SCOPE": "Holders of keys like this one can read but cannot create experiments, runs or "
    "models.",
    "REGISTRY_ADMIN_REQUIRED": "Every non-admin third party is refused on the whole registry, reads included.",
    "PAYMENT_REQUIRED": "Calls made with this key are refused with 402 until the account is topped up.",
    "RATE_LIMITED": "Calls made with this key are refused with 429 and the MLflow client backs off for minutes.",
    "AUTH_BYPASS": "Anyone, with no key or a made-up one, can read and change the registry: a security "
    "incident.",
    "REVOCATION_DELAYED": "A revoked key keeps access to the registry for a while after its revocation.",
    "CLIENT_TOKEN_LOST": "Third-party clients lose their token mid-run and fail with 401, or register into a "
    "local MLflow by mistake.",
    "LATENCY_BUDGET_EXCEEDED": "Third parties can register models, but slowly enough that clients with short "
    "timeouts give up.",
    "UNEXPECTED_RESPONSE": "Some third-party calls fail in a way no known failure explains; the evidence shows "
    "which.",
    # announced codes (see ANNOUNCED_CODES)
    "PROXY_DROPS_REQUEST_BODY": "Third parties can register models but cannot delete models, versions or tags "
    "through the proxy: those calls get 400 'Missing value for required parameter'.",
    "NOT_HOKUSAI_API": "Clients given this URL reach something that is not the Hokusai API, so every call fails "
    "or goes astray.",
    "SUITE_ERROR": "None shown: the suite itself (or the host project's pytest settings) failed, so this run "
    "says nothing about what third parties meet.",
    # the SDK codes (issue 11)
    "SDK_EVENT_ROUTE_MISSING": "Third parties who register with the hokusai SDK get an error after MLflow "
    "accepted the model, and the site never hears of it: the model stays a draft.",
    "SDK_EVENT_REJECTED": "The SDK's registration event is refused after MLflow accepted the model, so the SDK "
    "raises and the site keeps the model as a draft.",
    "SDK_STEP_FAILED": "Third parties who follow the SDK's instructions cannot register with it, although the "
    "stock MLflow client works.",
}

#: When a code has no entry of its own (a code added elsewhere): the category's usual sentence.
_CATEGORY_IMPACTS: dict[str, str] = {
    "network": "Third-party clients cannot reach the platform.",
    "deployment": "Third-party MLflow clients fail against the deployment.",
    "configuration": "Third-party MLflow clients are refused or misrouted by the deployment's configuration.",
    "credentials": "Calls made with keys like this one are refused.",
    "security": "The registry's access control does not hold.",
    "client": "Clients set up this way fail.",
    "other": "See the evidence for what fails.",
}


def owner_of(code: str) -> str:
    """The team that fixes ``code`` (a key of :data:`OWNER_TEAMS`).

    A code without an entry in :data:`OWNERS` (which the unit tests forbid) falls back to
    ``api-service``, the front door every third-party call goes through, so a report never breaks.
    """
    return OWNERS.get(code, "api-service")


def impact_of(code: str, category: str | None = None) -> str:
    """What ``code`` breaks for third parties, in one sentence."""
    if code in IMPACTS:
        return IMPACTS[code]
    cat = category or (TEXTS[code].category if code in TEXTS else "other")
    return _CATEGORY_IMPACTS.get(cat, _CATEGORY_IMPACTS["other"])
