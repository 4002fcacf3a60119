"""Fault switches of the local reference stack: one name per failure in the catalogue.

Each fault reproduces one entry of the platform's failure history (contract section 7) so that
every server-side diagnosis code can be produced on purpose. Faults are set at start
(``start_stack(faults=[...])``, ``hokusai-stack up --fault NAME``) or switched on a running stack
(``Stack.set_faults``), because each service reads its fault set on every request.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULTS", "PROCESS_FAULTS", "Fault", "check_faults"]


@dataclass(frozen=True)
class Fault:
    name: str
    component: str  #: ``api`` (balancer, middleware, proxy), ``auth``, or ``stack`` (the launcher stops a process)
    code: str  #: the diagnosis code a live run must give as primary
    history: str  #: the catalogue entry it reproduces
    description: str


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("api-down", "api", "API_SERVICE_DOWN", "F24",
          "The balancer answers every API path with an HTML 503; direct /mlflow/ still works."),
    Fault("route-not-configured", "api", "ROUTE_NOT_CONFIGURED", "F8, F10",
          "The balancer has no rule for /api/mlflow/*: text/plain 404 'Not Found', with or without a key."),
    Fault("route-not-mounted", "api", "PROXY_ROUTE_NOT_MOUNTED", "F9",
          "The API app has no /api/mlflow mount: 401 without a key, JSON 404 {'detail':'Not Found'} with one."),
    Fault("mlflow-path-mismatch", "api", "MLFLOW_PATH_MISMATCH", "F11, F12",
          "The proxy strips api/2.0/mlflow from the upstream path; MLflow 404s, shown as RESOURCE_NOT_FOUND."),
    Fault("mlflow-unreachable", "api", "MLFLOW_UNREACHABLE", "F14",
          "The proxy's upstream points at a closed port: 502 'Failed to connect to MLflow server at ...'."),
    Fault("auth-down", "auth", "AUTH_SERVICE_DOWN", "F6",
          "The auth service answers everything, /health included, with the balancer's HTML 503."),
    Fault("auth-misrouted", "auth", "AUTH_SERVICE_MISROUTED", "F7",
          "Auth /health is fine but /api/v1/keys/validate gets the balancer's text/plain 404."),
    Fault("wrong-service-id", "api", "SERVICE_ID_REJECTED", "F4",
          "The proxy validates keys with service_id 'ml-platform' while keys are registered to 'platform'."),
    Fault("auth-body-only", "auth", "AUTH_CONTRACT_MISMATCH", "F3",
          "The auth service follows the spec strictly: body api_key required (422 otherwise), Bearer ignored."),
    Fault("strip-auth", "api", "PROXY_STRIPS_AUTH", "F2, F20",
          "The proxy drops Authorization/X-API-Key; the MLflow-side gateway answers 401 'API key required'."),
    Fault("artifacts-disabled", "api", "ARTIFACTS_DISABLED", "F13",
          "MLFLOW_SERVE_ARTIFACTS is off in the proxy: 503 ARTIFACTS_DISABLED on every mlflow-artifacts path."),
    Fault("host-header", "api", "HOST_HEADER_REJECTED", "F19",
          "The proxy forwards a Host that MLflow does not allow: text/plain 403 'Invalid Host header ...'."),
    Fault("rate-limited", "auth", "RATE_LIMITED", "F22",
          "The auth service answers validate with 429; the proxy gives 429 with Retry-After: 60."),
    Fault("payment-required", "auth", "PAYMENT_REQUIRED", "F21",
          "Validation reports has_sufficient_balance false; the proxy answers 402 'Insufficient balance'."),
    Fault("registry-admin", "api", "REGISTRY_ADMIN_REQUIRED", "F18",
          "The registry-admin policy (HEAD): every MLflow path, reads included, needs an admin key."),
    Fault("write-scope", "auth", "KEY_LACKS_WRITE_SCOPE", "F17",
          "Validation returns only read scopes: reads pass, MLflow writes get 403 FORBIDDEN."),
    Fault("auth-bypass", "api", "AUTH_BYPASS", "security",
          "The proxy never validates: no key or an unknown key is served."),
    Fault("revocation-delay", "api", "REVOCATION_DELAYED", "F23",
          "Validation results are cached for an hour, so a key in use when revoked keeps working."),
    Fault("drop-delete-body", "api", "PROXY_DROPS_REQUEST_BODY", "section 5",
          "The real proxy's body rule: a body is forwarded only for POST, PUT and PATCH, so MLflow's JSON-body "
          "DELETEs get 400 'Missing value for required parameter ...'."),
    Fault("auth-stopped", "stack", "AUTH_SERVICE_DOWN", "F6",
          "The auth service's process is stopped (its port refuses); the API answers 503 "
          "{'detail':'Authentication service unavailable'} with Retry-After: 1. Only the starting process can switch it."),
    Fault("mlflow-stopped", "stack", "MLFLOW_UNREACHABLE", "F14",
          "The MLflow server's process is stopped (its port refuses); the proxy answers 502 'Failed to connect to "
          "MLflow server at <base>', direct /mlflow the balancer's 502. Only the starting process can switch it."),
    Fault("artifact-path-untranslated", "api", "MLFLOW_PATH_MISMATCH", "F11",
          "The proxy sends api/2.0/mlflow-artifacts/ untranslated to MLflow's public /mlflow path: MLflow's HTML 404 "
          "on artifact routes only (MLflow <= 3.11), while experiments, runs and models work."),
    # Seen only by the SDK checks (hokusai_sdk): the stock MLflow client never posts the event.
    Fault("events-route-missing", "api", "SDK_EVENT_ROUTE_MISSING", "F28",
          "The API build has no /api/models/tokenized-registration-events route: JSON 404 after auth."),
    Fault("events-hook-fails", "api", "SDK_EVENT_REJECTED", "F28",
          "The registration-event hook fails: 502 'Failed to emit model registration event'."),
)}
#: Faults the launcher applies by stopping a process (fault -> the process's name), not the services.
PROCESS_FAULTS: dict[str, str] = {"auth-stopped": "auth service", "mlflow-stopped": "MLflow"}


def check_faults(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the names as a tuple, or raise ValueError naming the unknown ones and the known ones."""
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(
            f"unknown fault switch(es): {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}"
        )
    return tuple(dict.fromkeys(names))
