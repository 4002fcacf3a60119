"""The diagnosis codes' fixed texts: category, title, symptom, likely cause, fix, history.

This is the public table of DESIGN.md ("Diagnosis codes"); the codes and categories must not
change. The rules (:mod:`.rules`) use the ``fix`` as the default remediation and build the
summary from the evidence; :mod:`.docs` renders ``docs/troubleshooting.md`` from this table.
Who fixes each code and what it breaks for third parties (the hand-off) is in :mod:`.ownership`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES", "TEXTS", "RuleText"]


@dataclass(frozen=True)
class RuleText:
    category: str
    title: str
    symptom: str  #: the tell: what the probes and checks see
    cause: str  #: the likely cause
    fix: str  #: what to change, where
    history: str  #: failure-catalogue entries (contract section 7)


TEXTS: dict[str, RuleText] = {
    "HOST_UNREACHABLE": RuleText(
        "network", "A host does not answer at all",
        "DNS does not resolve, the TCP connection is refused, or it times out, before any HTTP status "
        "(the GET /health reachability probe of the API or auth host fails; every later probe to it is skipped).",
        "The host name has no DNS record yet, nothing listens on that port (wrong port or scheme, "
        "listener missing), or a firewall / security group drops the packets.",
        "Check the URL settings (--hokusai-api-url, --hokusai-auth-url, --hokusai-tracking-uri), the DNS "
        "record of the host, the balancer listener on that port (443 for https), and the security groups "
        "between you and the balancer.",
        "F1"),
    "TLS_ERROR": RuleText(
        "network", "The TLS handshake fails",
        "The connection opens but the certificate or handshake is refused (requests SSLError), before any HTTP status.",
        "The certificate does not cover the host name, has expired, misses its intermediate chain, or is "
        "self-signed; or the port speaks plain http.",
        "Install a certificate that covers the host (e.g. the *.hokus.ai wildcard) with its full chain on "
        "the balancer's HTTPS listener; for a private CA, point REQUESTS_CA_BUNDLE at it.",
        "F1, F14"),
    "API_SERVICE_DOWN": RuleText(
        "deployment", "The API service is not running",
        "GET {api}/health answers 5xx or the balancer's HTML error page, while direct MLflow still answers.",
        "The API container crashed or never started: an image that fails at import (syntax error, missing "
        "MLFLOW_TRACKING_URI / MLFLOW_SERVER_URL), the wrong CPU architecture, or an ECS rollback.",
        "Look at the API service's task events and logs, fix the start-up error, and redeploy; the balancer "
        "target group for the API must report healthy targets on /health.",
        "F24"),
    "ROUTE_NOT_CONFIGURED": RuleText(
        "deployment", "The balancer has no rule for the proxy path",
        "GET {tracking}/api/2.0/mlflow/experiments/search gets a plain-text 404 'Not Found' even without a "
        "key (a healthy proxy answers 401 first).",
        "The load balancer's default action answers: no listener rule sends /api/mlflow/* to the API "
        "service, or only the http listener has the rules.",
        "Add a listener rule that forwards /api/mlflow/* (and /api/*) to the API service's target group, "
        "on the HTTPS listener as well as the HTTP one.",
        "F8, F10"),
    "PROXY_ROUTE_NOT_MOUNTED": RuleText(
        "deployment", "The API app has no route for the proxy mount",
        "401 'API key required' without a key, but JSON 404 {\"detail\":\"Not Found\"} with a valid one "
        "(auth runs before routing).",
        "The running API version does not mount the MLflow proxy router at /api/mlflow (a stale task "
        "definition, or a release that dropped the mount).",
        "Mount the MLflow proxy router at /api/mlflow in the API app and deploy the task definition that "
        "has it; compare the running image with the one you merged.",
        "F9, F25"),
    "MLFLOW_PATH_MISMATCH": RuleText(
        "deployment", "The proxy forwards REST calls to a path MLflow does not serve",
        "Authenticated REST calls get 404 RESOURCE_NOT_FOUND ('The requested resource was not found: "
        "<path>') or MLflow's HTML 404; or only the artifact routes (api/2.0/mlflow-artifacts/...) get MLflow's "
        "HTML 404 while experiments, runs and models work (the artifact path is not translated).",
        "The upstream path is wrong: MLflow runs with --static-prefix and the proxy targets the public URL "
        "(ajax-api translation, applied to api/2.0/mlflow/ but not to api/2.0/mlflow-artifacts/ before "
        "2025-07-26), MLflow >= 3.12 prefixes the REST routes too, or the /api/2.0/mlflow mount strips its own "
        "prefix.",
        "Point the proxy's MLflow upstream (MLFLOW_SERVER_URL / MLFLOW_TRACKING_URI on the API service) at "
        "the internal MLflow root, keep api/2.0/mlflow in the forwarded path, pin MLflow below 3.12 while "
        "it runs with --static-prefix, and tell clients to use {api}/api/mlflow as tracking URI.",
        "F11, F12"),
    "MLFLOW_UNREACHABLE": RuleText(
        "deployment", "The proxy cannot reach MLflow",
        "Through the proxy, 502 'Failed to connect to MLflow server at <base>' or 504 'MLflow server "
        "request timeout'; GET {api}/api/health/mlflow gives 503 naming the connect or TLS error.",
        "The API service's MLflow URL points at an address it cannot reach (internal load balancer without "
        "listeners, unresolvable service-discovery name, changed IP), MLflow is down, or mTLS fails "
        "(http vs https, certificate).",
        "Fix MLFLOW_SERVER_URL / MLFLOW_TRACKING_URI on the API service (and the CA / client certificate "
        "for mTLS); if direct MLflow fails too, restart the MLflow service.",
        "F14"),
    "AUTH_SERVICE_DOWN": RuleText(
        "deployment", "The auth service is down or erroring",
        "GET {auth}/health is not 200 (5xx, the balancer's HTML page), or validation answers 5xx; the proxy "
        "says 'Authentication service unavailable / timeout / error' (503 with Retry-After: 1).",
        "The auth service is not running, its target group has no healthy targets, or it fails on its "
        "database (e.g. a missing table after a migration).",
        "Restart the auth service and read its logs (database connectivity, migrations: UndefinedTable); "
        "check its target group health. If it answers directly but the proxy says 'unavailable', fix "
        "AUTH_SERVICE_URL / HOKUSAI_AUTH_SERVICE_URL on the API service.",
        "F6, F29"),
    "AUTH_SERVICE_MISROUTED": RuleText(
        "deployment", "Validation calls do not reach the auth service",
        "GET {auth}/health is fine but POST {auth}/api/v1/keys/validate hangs or 404s; the proxy says "
        "'Authentication service timeout' (after about 5 s) or 'Authentication service error'.",
        "A shared balancer's path rules catch /api/v1/* for the auth host and send it to another target, "
        "or the API service's AUTH_SERVICE_URL points at the wrong host.",
        "Give the auth host's /api/v1/* a host-header rule with a higher priority than the registry's /api/* "
        "rules (or a dedicated balancer), and check AUTH_SERVICE_URL on the API service.",
        "F7"),
    "SERVICE_ID_REJECTED": RuleText(
        "configuration", "The service_id in use does not match the key's registered service",
        "The same key validates (200) directly with service_id omitted or 'platform', but not with the "
        "service_id in use; through the proxy every key gets 401 'Invalid or expired API key'. The auth "
        "service's 401 names the key's registered service.",
        "The API service (AUTH_SERVICE_ID), the MLflow admin gateway (HOKUSAI_AUTH_SERVICE_ID) or this suite "
        "(--hokusai-service-id) validates with a service_id the key is not registered for, e.g. "
        "'ml-platform' while keys belong to 'platform'.",
        "Set AUTH_SERVICE_ID=platform on the API service and HOKUSAI_AUTH_SERVICE_ID=platform on the MLflow "
        "admin gateway (the auth service accepts only website, prediction and platform), and "
        "--hokusai-service-id / HOKUSAI_SERVICE_ID to the key's service; then redeploy.",
        "F4"),
    "AUTH_CONTRACT_MISMATCH": RuleText(
        "configuration", "The auth service and the proxy disagree on how the key is sent",
        "Directly, the key validates in body style ({\"api_key\": ...}) but not in header style "
        "(Authorization: Bearer, 422 or 401), or the other way round; the proxy, which uses the other "
        "style, fails with 'Authentication service error' or 'Invalid or expired API key'.",
        "A spec-strict auth service requires body api_key, while the API middleware sends the key as a "
        "Bearer header. Check the service_id first: in 2025 this was misdiagnosed, and the real cause was "
        "SERVICE_ID_REJECTED.",
        "Make the auth service accept Authorization: Bearer on /api/v1/keys/validate (as the real one does), "
        "or make the API middleware send the key as body api_key; the two must use one style.",
        "F3"),
    "PROXY_STRIPS_AUTH": RuleText(
        "configuration", "The key does not reach the layer behind the proxy",
        "The request carried the key, the proxy's auth passed, and yet the answer is 401 'API key required' "
        "(from the MLflow admin gateway); GET /api/health/mlflow may report the same text.",
        "The API proxy drops Authorization / X-API-Key before forwarding, or the key was sent as the "
        "?api_key= query parameter, which the gateway does not read; or the API's own MLflow calls lack "
        "MLFLOW_TRACKING_TOKEN.",
        "Forward Authorization and X-API-Key unchanged in the API service's MLflow proxy; send the key as "
        "'Authorization: Bearer' (not ?api_key=); give the API service an MLFLOW_TRACKING_TOKEN for its own "
        "MLflow calls.",
        "F2, F20"),
    "ARTIFACTS_DISABLED": RuleText(
        "configuration", "Only artifact calls fail",
        "Experiments, runs and models work, but .../api/2.0/mlflow-artifacts/... gets 503 "
        "ARTIFACTS_DISABLED (the proxy), 503 '--no-serve-artifacts' (MLflow 3.x), or 5xx on PUT. (MLflow's HTML "
        "404 on the artifact routes alone is the untranslated artifact path: MLFLOW_PATH_MISMATCH.)",
        "Artifact serving is off in the proxy (MLFLOW_SERVE_ARTIFACTS is not true), MLflow runs without "
        "--serve-artifacts, or the artifact store refuses writes (bucket permissions).",
        "Set MLFLOW_SERVE_ARTIFACTS=true on the API service; start MLflow with --serve-artifacts and an "
        "--artifacts-destination; give the MLflow task role write access (s3:PutObject, s3:ListBucket) to "
        "the artifact bucket.",
        "F11, F13"),
    "HOST_HEADER_REJECTED": RuleText(
        "configuration", "MLflow rejects the Host header",
        "A text/plain 403 'Invalid Host header - possible DNS rebinding attack detected' (unlike both JSON "
        "403s), passed through by the proxy.",
        "MLflow >= 3.9 checks the Host header, port included, against MLFLOW_SERVER_ALLOWED_HOSTS, and the "
        "host the proxy forwards is not in the list.",
        "Add the host MLflow sees, with its port (e.g. mlflow.hokusai-development.local:5000), to "
        "MLFLOW_SERVER_ALLOWED_HOSTS on the MLflow server, or make the proxy send a Host that is listed.",
        "F19"),
    "KEY_MISSING": RuleText(
        "credentials", "No API key is configured",
        "No key in HOKUSAI_API_KEY or --hokusai-api-key-file: nothing is sent (a raw MLflow client without "
        "MLFLOW_TRACKING_TOKEN gets 401 'API key required').",
        "The key was not exported into the environment of the test run (CI secret missing or not mapped).",
        "Export HOKUSAI_API_KEY=hk_live_... (or pass --hokusai-api-key-file PATH), or run against the "
        "bundled stack with --hokusai-target=local.",
        "F16"),
    "KEY_MALFORMED": RuleText(
        "credentials", "The API key does not have the Hokusai key format",
        "The key is not hk_live_ / hk_test_ / hk_dev_ followed by 32 to 40 letters and digits; it is "
        "reported before any request and never sent.",
        "A truncated copy, quotes or whitespace around the value, or another secret in its place.",
        "Copy the key again (hk_live_ + 32 alphanumerics, no quotes, spaces or line breaks) into "
        "HOKUSAI_API_KEY or the key file.",
        "F16"),
    "KEY_REJECTED": RuleText(
        "credentials", "The auth service rejects the key",
        "Direct validation fails (401) in every style and with every service_id, including none; the proxy "
        "answers 401 'Invalid or expired API key'.",
        "The key is unknown, expired, revoked, or restricted to other client IPs (allowed_ips).",
        "Mint a new key (POST {auth}/api/v1/keys with service_id platform and the model:write scope) and "
        "put it in HOKUSAI_API_KEY; for an IP-restricted key, check the client_ip the proxy forwards.",
        "F5"),
    "KEY_LACKS_WRITE_SCOPE": RuleText(
        "credentials", "The key may read but not write",
        "Reads pass; writes (experiments/create, registered-models/create, artifact PUT and GET) get 403 "
        "FORBIDDEN whose body lists current_scopes.",
        "The key was minted without a write scope (model:write, mlflow:write, mlflow:access, write, admin).",
        "Mint a key with the model:write (or mlflow:write) scope, or add the scope to this key in the auth "
        "service.",
        "F17"),
    "REGISTRY_ADMIN_REQUIRED": RuleText(
        "credentials", "The registry is closed to non-admin keys",
        "Every registry request, reads included, gets 403 {\"error\":\"REGISTRY_ADMIN_REQUIRED\"} from the "
        "API (via /api/mlflow) or from the MLflow gateway (via /mlflow); /api/v1/* still works.",
        "The platform's registry-admin policy (since 2026-06-30): only admins may use MLflow, so third-party "
        "registration through MLflow is closed by design.",
        "Use a key whose principal is a registry admin (is_admin, or a scope in REGISTRY_ADMIN_SCOPES: "
        "admin, mlflow:admin, registry:admin, model-registry:admin), or relax the policy on the API service "
        "and the MLflow admin gateway.",
        "F18"),
    "PAYMENT_REQUIRED": RuleText(
        "credentials", "The account behind the key has no balance",
        "402 'Insufficient balance' or 402 {\"error\":\"usage_debit_rejected\", \"reason_code\": ...}.",
        "The key's account has an insufficient settled balance or the usage debit was rejected.",
        "Top up the account or change the key's billing plan; MLflow paths are exempt on current platform "
        "versions, so a 402 there also means an old API build is running.",
        "F21"),
    "RATE_LIMITED": RuleText(
        "credentials", "The key or the client is rate limited",
        "429, with Retry-After (60 s from the proxy); the MLflow client backs off for minutes before it "
        "shows the error.",
        "The key's rate_limit_per_hour is spent (default 1000), or a per-IP limit of the API applies.",
        "Wait for Retry-After, raise the key's rate_limit_per_hour (10 to 100000), or use a separate key "
        "for the suite; run MLflow clients with MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 so 429s show at once.",
        "F22"),
    "AUTH_BYPASS": RuleText(
        "security", "The proxy serves requests without a valid key",
        "A request with no key, or with a well-formed key nobody minted, is served (2xx) by the proxy.",
        "The API's auth middleware is not installed or not enforcing on /api/mlflow (an unauthenticated "
        "prefix that is too wide, or a 200 {\"is_valid\": false} accepted as valid).",
        "Install the key-authentication middleware in front of the MLflow proxy, keep /api/mlflow out of "
        "its unauthenticated prefixes, and treat is_valid: false as a rejection. Treat this as a security "
        "incident: the registry was open.",
        "security, F30"),
    "REVOCATION_DELAYED": RuleText(
        "security", "A revoked key keeps working",
        "After its revocation, a key is still served through the proxy; the finding gives for how long.",
        "The API caches successful validations (Redis or in memory) for too long, and revocation does not "
        "invalidate the cache.",
        "Lower the validation cache TTL (60 s on the platform), delete the cached entry "
        "(api_key:validation:<key>) when a key is revoked, and check the Redis cache for stale positives.",
        "F5, F23"),
    "CLIENT_TOKEN_LOST": RuleText(
        "client", "The MLflow client lost its token mid-run",
        "The MLflow client's requests carry no key and get 401 'API key required', although a key is "
        "configured and works on the proxy; MLFLOW_TRACKING_TOKEN is unset at that moment.",
        "The hokusai SDK's local fallback (2025-07-16 to 2026-04-18) cleared MLFLOW_TRACKING_TOKEN after a "
        "failed remote probe; or something else in the process unset it.",
        "Upgrade the hokusai SDK past 66d077c, set MLFLOW_TRACKING_TOKEN again after SDK initialisation, "
        "and check that nothing falls back to http://localhost:5001.",
        "F15"),
    "PROXY_DROPS_REQUEST_BODY": RuleText(
        "deployment", "The proxy drops the body of DELETE requests",
        "Registration works through the proxy, but MLflow's JSON-body DELETE calls (registered-models/delete, "
        "model-versions/delete, .../delete-tag) get 400 INVALID_PARAMETER_VALUE 'Missing value for required "
        "parameter ...' through the tracking URI: the stock client sent the parameter in the body and MLflow "
        "never saw it.",
        "The API service's MLflow proxy forwards a request body only for POST, PUT and PATCH (every real proxy "
        "commit so far, src/api/routes/mlflow_proxy_improved.py), so registered models, versions and tags "
        "cannot be deleted through /api/mlflow and pile up.",
        "In the API service's MLflow proxy (src/api/routes/mlflow_proxy_improved.py), forward the request body "
        "for every method that carries one, DELETE included (stream request.stream() upstream whatever the "
        "method), and redeploy. Until then remove the leftovers this run lists from a client that reaches "
        "MLflow without the proxy, and run with --hokusai-accept PROXY_DROPS_REQUEST_BODY to gate on "
        "registration while the fix is pending.",
        "section 5"),
    "NOT_HOKUSAI_API": RuleText(
        "configuration", "The URL answers, but it is not the Hokusai API",
        "A configured URL answers 2xx (or a login wall) where the Hokusai API or MLflow answer JSON: an HTML "
        "page, a catch-all website, a sign-in page, or another service's JSON; the finding names the status, "
        "the content type and the HTML title.",
        "--hokusai-api-url (or --hokusai-tracking-uri / --hokusai-auth-url) points at a website, a "
        "single-page app or another service instead of the Hokusai API: a typo, the marketing site instead of "
        "the registry host, or a path prefix missing. It is a wrong URL, not a security finding.",
        "Point --hokusai-api-url at the API service (e.g. https://registry.hokus.ai, which answers /health with "
        "JSON and /api/mlflow/... with 401 'API key required' without a key), --hokusai-auth-url at the auth "
        "service (https://auth.hokus.ai) and --hokusai-tracking-uri at {api-url}/api/mlflow.",
        "F27"),
    "LATENCY_BUDGET_EXCEEDED": RuleText(
        "other", "The platform works but is too slow",
        "A performance check (hokusai_perf) missed its budget (the p95 of key validation or of proxied requests "
        "over --hokusai-budget-auth-ms / --hokusai-budget-proxy-ms, a full registration over "
        "--hokusai-budget-registration-s) or regressed beyond --hokusai-regression-factor times the p50 of "
        "--hokusai-baseline. It is the root cause only when every functional check and probe passed.",
        "Key validation: a slow auth service (its database) or a failing Redis validation cache; latency in "
        "steps of about 2 s is the Redis timeout (a security group or a bad REDIS_URL). Proxied requests: the "
        "API service (CPU, workers, validation without cache) or its MLflow upstream. Registration: the MLflow "
        "server (its backend database) or the artifact store.",
        "Find where the time goes: for key validation, the auth service and the API's Redis cache (GET "
        "{api}/health?detailed=true shows redis; allow the API's security group to reach Redis, fix REDIS_URL); "
        "for proxied requests, compare {api}/health and direct MLflow to split the API service from its MLflow "
        "upstream; for registration, the MLflow server's database and the artifact store (the check's phases "
        "show which step is slow). If the budget is simply too tight for this link, raise --hokusai-budget-*.",
        "F23"),
    "SUITE_ERROR": RuleText(
        "other", "A check crashed without an answer from the deployment",
        "A check or one of its fixtures raised an exception that carries no answer from the deployment: an "
        "error in the suite itself, or the host project's pytest settings (a warning that filterwarnings = "
        "error or -W error turned into an exception, a missing plugin, a fixture overridden with another "
        "scope). The check is reported as an error with its exception, never with a deployment's code.",
        "The pytest-hokusai suite met a Python environment or pytest configuration it does not handle, or "
        "has a bug; the deployment was not asked, or its answer is not what failed.",
        "Read the exception in the check's report. For a warning turned into an error, add a filterwarnings "
        "entry for it in the host project (or report it, so the check can carry the filter itself); for "
        "anything else, report it to pytest-hokusai with the exception and your pytest settings.",
        "none (the suite, not the platform)"),
    "UNEXPECTED_RESPONSE": RuleText(
        "other", "Something no rule explains",
        "A check failed or a probe answered in a way none of the rules above recognise; the evidence shows "
        "what was seen.",
        "Unknown: a new failure mode, or an old one in a new shape.",
        "Read the evidence (status, content type, body excerpt) and the failing checks' transcripts, "
        "compare them with the failure catalogue, and report the case so that a rule can be added.",
        "F25, F26, F27, F28"),
    # The SDK codes (issue 11): the stock MLflow client registers, the hokusai SDK does not.
    "SDK_EVENT_ROUTE_MISSING": RuleText(
        "deployment", "The API does not serve the SDK's registration event",
        "The SDK's MLflow steps pass (the model version exists with the SDK's tags), then POST "
        "{api}/api/models/tokenized-registration-events answers 404 (or 405): register_tokenized_model and "
        "`hokusai model register` raise NotificationError 'Model registration succeeded in MLflow, but "
        "notifying the Hokusai site failed with HTTP 404'.",
        "The running API build predates the route (the models router with tokenized-registration-events, "
        "2026-04), the balancer does not send /api/models/* to the API service, or the SDK posts to another "
        "host: it uses HOKUSAI_API_ENDPOINT, else HOKUSAI_API_URL, else https://api.hokus.ai.",
        "Deploy an API build that mounts the models router at /api/models (and /models) and route /api/models/* "
        "to the API service; where the SDK runs, set HOKUSAI_API_ENDPOINT to {api}/api.",
        "F28"),
    "SDK_EVENT_REJECTED": RuleText(
        "deployment", "The API refuses the SDK's registration event",
        "The SDK's MLflow steps pass, then the tokenized-registration event is refused: 403 'Insufficient "
        "permissions for model registration events', 422 (the payload, e.g. a null mlflow_run_id), or 502 "
        "'Failed to emit model registration event'; the SDK raises NotificationError and the site keeps the "
        "model as a draft.",
        "403: the key has no write scope (model:write, mlflow:write, write, ...). 422: the SDK and the API "
        "disagree on the payload (the SDK sends mlflow_run_id only for a runs:/ model URI; the API requires "
        "it). 502: the API's registration hook (its webhook or queue) failed.",
        "403: give the key a write scope. 422: register a runs:/<run_id>/<path> model URI and keep the SDK and "
        "the API at matching commits. 502: read the API service's log ('Tokenized registration hook failed') "
        "and fix the hook's dependency.",
        "F28"),
    "SDK_STEP_FAILED": RuleText(
        "client", "An SDK step fails where the stock client works",
        "The stock MLflow client registers (the triage's registered-model create passes), but an SDK step "
        "raises: ModelRegistry(), the MLflow steps of register_tokenized_model, or `hokusai model register`; "
        "the finding names the step and its error.",
        "The SDK's set-up: HOKUSAI_API_KEY not set (the SDK does not read MLFLOW_TRACKING_TOKEN: 'Authentication "
        "failed: HOKUSAI_API_KEY is required', F16), HOKUSAI_MOCK_MODE set (any value), the SDK installed "
        "without its [ml] extra, or an SDK call its release does not support (register_baseline wants the "
        "SDK's own model objects).",
        "Set HOKUSAI_API_KEY and MLFLOW_TRACKING_TOKEN to the key and HOKUSAI_API_ENDPOINT to {api}/api; install "
        "the SDK from git with its extra (pip install \"hokusai-ml-platform[ml] @ git+https://github.com/"
        "Hokusai-protocol/hokusai-data-pipeline.git#subdirectory=hokusai-ml-platform\"); register with "
        "register_tokenized_model and a runs:/ model URI; read the step's error in the finding.",
        "F16, F28"),
}

#: Every code, in the DESIGN.md table's order.
CODES: tuple[str, ...] = tuple(TEXTS)
