"""The stack's API service (balancer + auth middleware + streaming MLflow proxy) over real HTTP.

Three uvicorn servers run in threads: a fake auth service whose validate answer each test
chooses, a fake "MLflow" that echoes what reached it (and can stream, stall, 404 in HTML or
403 on a foreign Host), and the API service under test between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pytest_hokusai.stack.api_service import create_app
from pytest_hokusai.stack.config import STACK_TOKEN_HEADER, ApiServiceConfig
from pytest_hokusai.stack.middleware import extract_key, is_mlflow_write, is_registry_path
from pytest_hokusai.stack.proxy import filter_headers, translate_path
from tests.support.threadserver import ServerStartError, serve_app

# Test keys are plain labels, deliberately not in the hk_live_ format.
WRITER, READER, ADMIN, ROLE_ADMIN, SCOPE_ADMIN, BROKE, LENIENT = (
    f"test-key-{name}" for name in ("writer", "reader", "admin", "roleadmin", "scopeadmin", "broke", "lenient")
)
PRINCIPALS: dict[str, dict[str, Any]] = {
    WRITER: {"is_valid": True, "user_id": "u-writer", "key_id": "k-writer", "service_id": "platform",
             "scopes": ["read", "write"]},
    READER: {"is_valid": True, "user_id": "u-reader", "key_id": "k-reader", "scopes": ["read"]},
    ADMIN: {"is_valid": True, "user": {"id": "u-admin", "is_admin": True}, "key_id": "k-admin", "scopes": []},
    ROLE_ADMIN: {"user_id": "u-role", "key_id": "k-role", "scopes": ["read"], "roles": ["registry:admin"]},
    SCOPE_ADMIN: {"user_id": "u-scope", "key_id": "k-scope", "scopes": ["mlflow:admin"]},
    BROKE: {"user_id": "u-broke", "key_id": "k-broke", "scopes": ["write"], "has_sufficient_balance": False},
    LENIENT: {"is_valid": False, "user_id": "u-lenient", "key_id": "k-lenient", "scopes": ["write"]},
}
MB = 1 << 20
BLOCK = random.Random(7).randbytes(MB)
BIG_MB = 50
SEARCH = "/api/mlflow/api/2.0/mlflow/experiments/search"
ADMIN_TOKEN = secrets.token_hex(16)
ALB_503_TITLE = "<title>503 Service Temporarily Unavailable</title>"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sha_of_blocks(n: int) -> str:
    digest = hashlib.sha256()
    for _ in range(n):
        digest.update(BLOCK)
    return digest.hexdigest()


# --- fake auth service -------------------------------------------------------------------------
class FakeAuth:
    """``POST /api/v1/keys/validate`` answering per key, or per ``mode`` for the odd answers."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.mode = "normal"
        self.calls: list[dict[str, Any]] = []
        self.revoked: set[str] = set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/v1/keys/validate")
        async def validate(request: Request) -> Response:
            body = await request.json()
            authorization = request.headers.get("authorization", "")
            self.calls.append({"authorization": authorization, "body": body})
            key = authorization.removeprefix("Bearer ")
            if self.mode == "list":
                return JSONResponse([PRINCIPALS[WRITER]])
            if self.mode == "nonjson":
                return PlainTextResponse("valid")
            if self.mode in ("429", "422", "500"):
                return JSONResponse({"detail": "nope"}, status_code=int(self.mode))
            if self.mode == "slow":
                await asyncio.sleep(2.0)
            if key not in PRINCIPALS or key in self.revoked:
                return JSONResponse({"detail": "API key not found or invalid"}, status_code=401)
            if body.get("service_id") != "platform":
                return JSONResponse({"detail": "key registered to 'platform'"}, status_code=401)
            return JSONResponse(PRINCIPALS[key])

        return app


# --- fake MLflow -------------------------------------------------------------------------------
_ECHO_PREFIXES = ("/api/2.0/", "/ajax-api/2.0/", "/mlflow/ajax-api/2.0/", "/mlflow/health", "/health")


class FakeMlflow:
    """Pure ASGI app recording every request; body read incrementally (sha256, length, chunks)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        digest, length, chunks = hashlib.sha256(), 0, 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            if body:
                digest.update(body)
                length += len(body)
                chunks += 1
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        headers = Headers(scope=scope)
        record = {
            "method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
            "headers": [[k.decode().lower(), v.decode()] for k, v in scope["headers"]],
            "body_len": length, "body_sha256": digest.hexdigest(), "chunks": chunks,
        }
        self.requests.append(record)
        response = await self.respond(scope["path"], QueryParams(scope["query_string"].decode()), headers, record)
        await response(scope, receive, send)

    async def respond(self, path: str, query: QueryParams, headers: Headers, record: dict[str, Any]) -> Response:
        host = headers.get("host", "")
        if not host.startswith(("127.0.0.1", "localhost")):
            return PlainTextResponse("Invalid Host header - possible DNS rebinding attack detected", 403)
        if path.endswith("/registered-models/search"):
            return JSONResponse({"registered_models": [{"name": "toy-model"}]})
        if path.endswith("/slow"):
            await asyncio.sleep(float(query["delay"]))
        if path.endswith("/big"):
            n = int(query["mb"])

            async def blocks() -> AsyncIterator[bytes]:
                for _ in range(n):
                    yield BLOCK

            from starlette.responses import StreamingResponse

            return StreamingResponse(blocks(), media_type="application/octet-stream",
                                     headers={"Content-Length": str(n * MB)})
        if path.endswith("/hop"):
            return JSONResponse(record, headers={
                "Connection": "X-Upstream-Hop", "X-Upstream-Hop": "1", "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic", "Upgrade": "foo/1", "Trailer": "X-Checksum", "X-Echo": "kept",
            })
        if path.endswith("/html500"):
            return Response("<html><body>boom</body></html>", 500, media_type="text/html")
        if path.startswith(_ECHO_PREFIXES) or path in ("/mlflow", "/mlflow/"):
            return JSONResponse(record)
        return Response("<!doctype html><title>404 Not Found</title>", 404, media_type="text/html")


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k == name]


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fake_auth() -> Iterator[tuple[FakeAuth, str]]:
    auth = FakeAuth()
    with serve_app(auth.app()) as url:
        yield auth, url


@pytest.fixture(scope="module")
def fake_mlflow() -> Iterator[tuple[FakeMlflow, str]]:
    mlflow = FakeMlflow()
    with serve_app(mlflow) as url:
        yield mlflow, url


@pytest.fixture(scope="module")
def make_config(fake_auth: tuple[FakeAuth, str], fake_mlflow: tuple[FakeMlflow, str],
                closed_url: str) -> Any:
    def make(**overrides: Any) -> ApiServiceConfig:
        values: dict[str, Any] = {
            "auth_url": fake_auth[1], "mlflow_url": fake_mlflow[1], "admin_token": ADMIN_TOKEN,
            "auth_timeout": 1.0, "upstream_timeout": 5.0, "unreachable_url": closed_url,
        }
        values.update(overrides)
        return ApiServiceConfig(**values)

    return make


@pytest.fixture(scope="module")
def api_url(make_config: Any) -> Iterator[str]:
    with serve_app(create_app(make_config())) as url:
        yield url


@contextlib.contextmanager
def other_api(make_config: Any, **overrides: Any) -> Iterator[httpx.Client]:
    """A second API service with a different config, for the settings the shared one can't toggle."""
    with serve_app(create_app(make_config(**overrides))) as url, \
            httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def auth(fake_auth: tuple[FakeAuth, str]) -> FakeAuth:
    return fake_auth[0]


@pytest.fixture
def upstream(fake_mlflow: tuple[FakeMlflow, str]) -> FakeMlflow:
    return fake_mlflow[0]


@pytest.fixture(autouse=True)
def _reset(http: httpx.Client, auth: FakeAuth, upstream: FakeMlflow) -> None:
    set_faults(http)  # also empties the validation cache
    auth.reset()
    upstream.requests.clear()


def set_faults(client: httpx.Client, *names: str) -> httpx.Response:
    response = client.put("/_stack/faults", json={"faults": list(names)}, headers={STACK_TOKEN_HEADER: ADMIN_TOKEN})
    assert response.status_code == 200, response.text
    return response


def stats(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/_stack/stats", headers={STACK_TOKEN_HEADER: ADMIN_TOKEN})
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


# --- pure rules --------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "write"), [
    ("GET", "/api/mlflow/api/2.0/mlflow/experiments/search", False),
    ("POST", "/api/mlflow/api/2.0/mlflow/runs/search", False),
    ("POST", "/api/mlflow/api/2.0/mlflow/registered-models/get-latest-versions", False),
    ("POST", "/api/mlflow/api/2.0/mlflow/runs/create", True),
    ("POST", "/api/mlflow/api/2.0/mlflow/RUNS/LOG-BATCH", True),
    ("GET", "/api/mlflow/api/2.0/mlflow/model-versions/transition-stage", True),
    ("GET", "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/1/model.pkl", True),
    ("DELETE", "/api/mlflow/api/2.0/mlflow/experiments/whatever", True),
    ("PATCH", "/api/mlflow/api/2.0/mlflow/anything", True),
    ("POST", "/api/v1/models/register", False),
])
def test_write_detection(method: str, path: str, write: bool) -> None:
    assert is_mlflow_write(method, path) is write


def test_registry_paths_and_ajax_translation() -> None:
    assert is_registry_path("/api/mlflow/x") and is_registry_path("/ajax-api/2.0/mlflow-artifacts/a")
    assert not is_registry_path("/api/v1/models")
    assert translate_path("api/2.0/mlflow/runs/get", "https://registry.hokus.ai/mlflow") == "ajax-api/2.0/mlflow/runs/get"
    assert translate_path("api/2.0/mlflow-artifacts/artifacts/a", "https://registry.hokus.ai/mlflow") == \
        "ajax-api/2.0/mlflow-artifacts/artifacts/a"
    assert translate_path("api/2.0/mlflow/runs/get", "http://127.0.0.1:5000") == "api/2.0/mlflow/runs/get"
    assert translate_path("ajax-api/2.0/mlflow/x", "https://registry.hokus.ai") == "ajax-api/2.0/mlflow/x"


def test_filter_headers_drops_hop_by_hop_and_connection_named() -> None:
    raw = [(b"Connection", b"keep-alive, X-Foo"), (b"X-Foo", b"1"), (b"TE", b"trailers"),
           (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"), (b"Host", b"h"), (b"X-Bar", b"2")]
    assert filter_headers(raw, {"host"}) == [(b"X-Bar", b"2")]


@pytest.mark.parametrize(("headers", "query", "expected"), [
    ({"Authorization": "Bearer k1", "X-API-Key": "k2"}, "api_key=k3", "k1"),
    ({"Authorization": "ApiKey k1", "X-API-Key": "k2"}, "", "k1"),
    ({"Authorization": "Basic k1", "X-API-Key": "k2"}, "", "k2"),
    ({"Authorization": "bearer k1"}, "api_key=k3", "k3"),
    ({"Authorization": "k1"}, "", None),
    ({"X-Hokusai-API-Key": "k1"}, "", None),
    ({"Authorization": "Bearer "}, "", None),
])
def test_extract_key_order(headers: dict[str, str], query: str, expected: str | None) -> None:
    assert extract_key(Headers(headers), QueryParams(query)) == expected


def test_create_app_rejects_unknown_policy_and_fault(make_config: Any) -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        create_app(make_config(policy="everyone-admin"))
    with pytest.raises(ValueError, match="unknown fault"):
        create_app(make_config(faults=["no-such-fault"]))


def test_serve_app_stops_and_reports_a_failed_startup() -> None:
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("lifespan failed on purpose")
        yield

    with serve_app(FastAPI()) as url:
        assert httpx.get(f"{url}/openapi.json", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):  # stopped on exit: the port is closed
        httpx.get(f"{url}/openapi.json", timeout=5)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="exited during startup"), serve_app(FastAPI(lifespan=broken)):
        pass
    assert time.monotonic() - started < 5


# --- health and unauthenticated paths ----------------------------------------------------------
def test_health_is_open_and_shaped(http: httpx.Client, auth: FakeAuth) -> None:
    body = http.get("/health").json()
    assert body["status"] == "healthy" and body["version"] == "1.0.0"
    assert body["services"] == {"api": "healthy", "dependency_checks": "skipped"} and body["timestamp"]
    assert http.get("/api/health").json() == {"detail": "API key required"}  # not an excluded prefix
    assert http.get("/api/health", headers=bearer(WRITER)).json() == {"detail": "Not Found"}
    assert len(auth.calls) == 1


def test_mlflow_health_probe(http: httpx.Client, fake_mlflow: tuple[FakeMlflow, str], closed_url: str) -> None:
    ok = http.get("/api/health/mlflow")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok" and ok.json()["sample_model"] == "toy-model"
    assert ok.json()["tracking_uri"] == fake_mlflow[1]
    assert fake_mlflow[0].last["query"] == "max_results=1"
    set_faults(http, "mlflow-unreachable")
    bad = http.get("/api/health/mlflow")
    assert bad.status_code == 503
    assert bad.json()["error_type"] == "ConnectError" and bad.json()["tracking_uri"] == closed_url
    assert isinstance(bad.json()["latency_ms"], float)


def test_options_is_unauthenticated_and_head_is_proxied(http: httpx.Client, upstream: FakeMlflow,
                                                         auth: FakeAuth) -> None:
    assert http.options(SEARCH).status_code == 200
    assert upstream.last["method"] == "OPTIONS" and not auth.calls
    head = http.head(SEARCH, headers=bearer(WRITER))
    assert head.status_code == 200 and head.content == b"" and upstream.last["method"] == "HEAD"


# --- key extraction and the validate call ------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {}, {"Authorization": WRITER}, {"Authorization": f"bearer {WRITER}"},
    {"Authorization": f"Basic {WRITER}"}, {"X-Hokusai-API-Key": WRITER},
])
def test_missing_or_unaccepted_key_is_401(http: httpx.Client, auth: FakeAuth, headers: dict[str, str]) -> None:
    response = http.get(SEARCH, headers=headers)
    assert (response.status_code, response.json()) == (401, {"detail": "API key required"})
    assert not auth.calls


@pytest.mark.parametrize(("headers", "params"), [
    (bearer(WRITER), {}), ({"Authorization": f"ApiKey {WRITER}"}, {}),
    ({"X-API-Key": WRITER}, {}), ({}, {"api_key": WRITER}),
    ({"Authorization": f"Basic {READER}", "X-API-Key": WRITER}, {}),
    ({"X-API-Key": WRITER}, {"api_key": READER}),
])
def test_key_sources_and_order(http: httpx.Client, auth: FakeAuth, headers: dict[str, str],
                               params: dict[str, str]) -> None:
    assert http.get(SEARCH, headers=headers, params=params).status_code == 200
    assert auth.calls[0]["authorization"] == f"Bearer {WRITER}"


def test_validate_request_shape(http: httpx.Client, auth: FakeAuth) -> None:
    http.get(SEARCH, headers={**bearer(WRITER), "X-Forwarded-For": "203.0.113.5, 10.0.0.1"})
    http.get(SEARCH, headers=bearer(READER))
    assert auth.calls[0]["body"] == {"service_id": "platform", "client_ip": "203.0.113.5"}
    assert auth.calls[1]["body"] == {"service_id": "platform", "client_ip": "127.0.0.1"}


@pytest.mark.parametrize(("mode", "key", "status", "detail", "retry_after"), [
    ("normal", "unknown-key", 401, "Invalid or expired API key", None),
    ("list", WRITER, 401, "Authentication service error", None),
    ("nonjson", WRITER, 401, "Authentication service error", None),
    ("429", WRITER, 429, "Rate limit exceeded", "60"),
    ("422", WRITER, 503, "Authentication service error", "1"),
    ("500", WRITER, 503, "Authentication service error", "1"),
    ("slow", WRITER, 503, "Authentication service timeout", "1"),
])
def test_auth_status_mapping(http: httpx.Client, auth: FakeAuth, upstream: FakeMlflow, mode: str, key: str,
                             status: int, detail: str, retry_after: str | None) -> None:
    auth.mode = mode
    response = http.get(SEARCH, headers=bearer(key))
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert response.headers.get("retry-after") == retry_after
    assert not upstream.requests


def test_auth_unreachable_is_503(make_config: Any, closed_url: str) -> None:
    with other_api(make_config, auth_url=closed_url) as client:
        response = client.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (503, {"detail": "Authentication service unavailable"})
    assert response.headers["retry-after"] == "1"


def test_is_valid_false_is_accepted_like_the_real_middleware(http: httpx.Client) -> None:
    assert http.get(SEARCH, headers=bearer(LENIENT)).status_code == 200


# --- cache -------------------------------------------------------------------------------------
def test_successes_are_cached(http: httpx.Client, auth: FakeAuth) -> None:
    before = stats(http)
    assert http.get(SEARCH, headers=bearer(WRITER)).status_code == 200
    assert http.get(SEARCH, headers={"X-API-Key": WRITER}).status_code == 200
    after = stats(http)
    assert len(auth.calls) == 1
    assert after["auth_calls"] - before["auth_calls"] == 1
    assert after["auth_cache_hits"] - before["auth_cache_hits"] == 1 and after["cache_size"] == 1
    cleared = http.delete("/_stack/cache", headers={STACK_TOKEN_HEADER: ADMIN_TOKEN})
    assert cleared.json() == {"cleared": 1}
    http.get(SEARCH, headers=bearer(WRITER))
    assert len(auth.calls) == 2


def test_failures_are_not_cached(http: httpx.Client, auth: FakeAuth) -> None:
    auth.mode = "500"
    assert http.get(SEARCH, headers=bearer(WRITER)).status_code == 503
    auth.mode = "normal"
    assert http.get(SEARCH, headers=bearer(WRITER)).status_code == 200
    assert len(auth.calls) == 2


def test_cache_ttl_zero_always_validates(make_config: Any, auth: FakeAuth) -> None:
    with other_api(make_config, cache_ttl=0) as client:
        for _ in range(3):
            assert client.get(SEARCH, headers=bearer(WRITER)).status_code == 200
    assert len(auth.calls) == 3


# --- policies ----------------------------------------------------------------------------------
def test_write_scope_policy(http: httpx.Client) -> None:
    base = "/api/mlflow/api/2.0/mlflow"
    assert http.get(f"{base}/experiments/search", headers=bearer(READER)).status_code == 200
    assert http.post(f"{base}/registered-models/search", headers=bearer(READER), json={}).status_code == 200
    denied = http.post(f"{base}/runs/create", headers=bearer(READER), json={})
    assert denied.status_code == 403
    assert denied.json() == {
        "detail": "Insufficient permissions for this operation", "error": "FORBIDDEN",
        "message": "This operation requires write permissions. Your API key has scopes: ['read']. "
                   "Required: 'model:write' or 'mlflow:write'",
        "required_scope": "model:write or mlflow:write", "current_scopes": ["read"],
    }
    artifact = "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/0/model.pkl"
    assert http.get(artifact, headers=bearer(READER)).status_code == 403  # downloads count as writes
    assert http.delete(f"{base}/experiments/anything", headers=bearer(READER)).status_code == 403
    assert http.post(f"{base}/runs/create", headers=bearer(WRITER), json={}).status_code == 200
    assert http.get(artifact, headers=bearer(WRITER)).status_code == 200


def test_insufficient_balance_is_402(http: httpx.Client) -> None:
    response = http.get(SEARCH, headers=bearer(BROKE))
    assert (response.status_code, response.json()) == (402, {"detail": "Insufficient balance"})


def test_registry_admin_fault(http: httpx.Client) -> None:
    set_faults(http, "registry-admin")
    denied = http.get(SEARCH, headers=bearer(READER))
    assert (denied.status_code, denied.json()) == (403, {
        "detail": "Admin access required for the model registry", "error": "REGISTRY_ADMIN_REQUIRED"})
    for key in (ADMIN, ROLE_ADMIN, SCOPE_ADMIN):
        assert http.get(SEARCH, headers=bearer(key)).status_code == 200, key
    assert http.get("/api/2.0/mlflow/experiments/search", headers=bearer(WRITER)).status_code == 403
    assert http.get("/api/v1/models", headers=bearer(READER)).status_code == 404  # past auth: no route
    assert stats(http)["policy"] == "registry-admin"
    set_faults(http)
    assert http.get(SEARCH, headers=bearer(READER)).status_code == 200


def test_registry_admin_policy_setting(make_config: Any) -> None:
    with other_api(make_config, policy="registry-admin") as client:
        assert client.get(SEARCH, headers=bearer(WRITER)).json()["error"] == "REGISTRY_ADMIN_REQUIRED"
        assert client.post("/api/mlflow/api/2.0/mlflow/runs/create", headers=bearer(ADMIN), json={}).status_code == 200


# --- proxy: what reaches MLflow ----------------------------------------------------------------
def test_forwarded_request(http: httpx.Client, upstream: FakeMlflow, fake_mlflow: tuple[FakeMlflow, str]) -> None:
    headers = {**bearer(WRITER), "X-API-Key": WRITER, "X-Custom": "yes", "X-Hokusai-User-Id": "spoofed",
               "User-Agent": "test-agent", "Accept-Encoding": "identity"}
    response = http.get(f"{SEARCH}?a=1&a=2&b=x%20y", headers=headers)
    assert response.status_code == 200
    seen = upstream.last
    assert seen["path"] == "/api/2.0/mlflow/experiments/search"
    assert seen["query"] == "a=1&a=2&b=x%20y"
    assert header(seen, "authorization") == [f"Bearer {WRITER}"] and header(seen, "x-api-key") == [WRITER]
    assert header(seen, "x-hokusai-user-id") == ["u-writer"]
    assert header(seen, "x-hokusai-api-key-id") == ["k-writer"]
    assert header(seen, "x-custom") == ["yes"]
    assert header(seen, "host") == [fake_mlflow[1].removeprefix("http://")]
    # The proxy's own client adds nothing: no second User-Agent, no Accept-Encoding of its own.
    assert header(seen, "user-agent") == ["test-agent"] and header(seen, "accept-encoding") == ["identity"]


def test_hop_by_hop_request_headers_dropped(http: httpx.Client, upstream: FakeMlflow) -> None:
    hop = {"Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "1", "Keep-Alive": "timeout=5",
           "TE": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Kept": "1"}
    assert http.get(SEARCH, headers={**bearer(WRITER), **hop}).status_code == 200
    names = {k for k, _ in upstream.last["headers"]}
    assert names.isdisjoint({"x-client-hop", "keep-alive", "te", "proxy-authorization"})
    assert "x-kept" in names and header(upstream.last, "connection") != ["keep-alive, X-Client-Hop"]


def test_hop_by_hop_response_headers_dropped(http: httpx.Client) -> None:
    response = http.get("/api/mlflow/api/2.0/mlflow/hop", headers=bearer(WRITER))
    assert response.status_code == 200 and response.headers["x-echo"] == "kept"
    for name in ("x-upstream-hop", "keep-alive", "proxy-authenticate", "upgrade", "trailer"):
        assert name not in response.headers, name


def test_delete_body_is_forwarded(http: httpx.Client, upstream: FakeMlflow) -> None:
    body = json.dumps({"run_id": "r1", "key": "k"}).encode()
    response = http.request("DELETE", "/api/mlflow/api/2.0/mlflow/runs/delete-tag", content=body,
                            headers={**bearer(WRITER), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert upstream.last["method"] == "DELETE"
    assert (upstream.last["body_len"], upstream.last["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_html_404_becomes_resource_not_found(http: httpx.Client) -> None:
    response = http.get("/api/mlflow/no/such/route", headers=bearer(WRITER))
    assert response.status_code == 404
    assert response.json() == {"error_code": "RESOURCE_NOT_FOUND",
                               "message": "The requested resource was not found: no/such/route"}
    other = http.get("/api/mlflow/api/2.0/mlflow/html500", headers=bearer(WRITER))
    assert other.status_code == 500 and other.headers["content-type"].startswith("text/html")


def test_api_2_0_mount_strips_its_own_prefix(http: httpx.Client, upstream: FakeMlflow) -> None:
    response = http.get("/api/2.0/mlflow/experiments/search", headers=bearer(WRITER))
    assert response.json()["message"] == "The requested resource was not found: experiments/search"
    assert upstream.last["path"] == "/experiments/search"


def test_direct_mlflow_route_bypasses_the_api(http: httpx.Client, upstream: FakeMlflow, auth: FakeAuth) -> None:
    ok = http.get("/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=1&x=1&x=2")
    assert ok.status_code == 200
    assert (upstream.last["path"], upstream.last["query"]) == (
        "/mlflow/ajax-api/2.0/mlflow/experiments/search", "max_results=1&x=1&x=2")
    assert not header(upstream.last, "x-hokusai-user-id") and not auth.calls
    html = http.get("/mlflow/api/2.0/mlflow/experiments/search")  # F11: static prefix, no REST route
    assert html.status_code == 404 and html.headers["content-type"].startswith("text/html")


# --- streaming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("known_length", [False, True], ids=["chunked", "content-length"])
def test_upload_is_streamed(http: httpx.Client, upstream: FakeMlflow, known_length: bool) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(BIG_MB):
            yield BLOCK

    headers = {**bearer(WRITER), "Content-Type": "application/octet-stream"}
    if known_length:
        headers["Content-Length"] = str(BIG_MB * MB)
    tracemalloc.start()
    try:
        response = http.put("/api/mlflow/api/2.0/mlflow-artifacts/artifacts/0/big.bin", content=body(),
                            headers=headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    seen = upstream.last
    assert (seen["body_len"], seen["body_sha256"]) == (BIG_MB * MB, sha_of_blocks(BIG_MB))
    assert seen["chunks"] > BIG_MB  # arrived in pieces, not as one buffered blob
    if known_length:
        assert header(seen, "content-length") == [str(BIG_MB * MB)] and not header(seen, "transfer-encoding")
    else:
        assert header(seen, "transfer-encoding") == ["chunked"] and not header(seen, "content-length")
    # Client, proxy and fake MLflow share this process: buffering anywhere would show ~50 MB.
    assert peak < 16 * MB, f"peak traced memory {peak / MB:.1f} MB during a {BIG_MB} MB upload"


def test_download_is_streamed(http: httpx.Client) -> None:
    digest, received = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        with http.stream("GET", f"/api/mlflow/api/2.0/mlflow-artifacts/artifacts/big?mb={BIG_MB}",
                         headers=bearer(WRITER)) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(BIG_MB * MB)
            for chunk in response.iter_raw():
                digest.update(chunk)
                received += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (received, digest.hexdigest()) == (BIG_MB * MB, sha_of_blocks(BIG_MB))
    assert peak < 16 * MB, f"peak traced memory {peak / MB:.1f} MB during a {BIG_MB} MB download"


# --- upstream failures -------------------------------------------------------------------------
def test_unreachable_mlflow_is_502(http: httpx.Client, closed_url: str) -> None:
    set_faults(http, "mlflow-unreachable")
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (
        502, {"detail": f"Failed to connect to MLflow server at {closed_url}"})
    assert http.get("/mlflow/ajax-api/2.0/mlflow/experiments/search").status_code == 200  # the ALB's own route


def test_slow_mlflow_is_504(make_config: Any) -> None:
    with other_api(make_config, upstream_timeout=0.3) as client:
        response = client.get("/api/mlflow/api/2.0/mlflow/slow?delay=1.0", headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (504, {"detail": "MLflow server request timeout after 0.3s"})


# --- fault switches ----------------------------------------------------------------------------
def test_api_down(http: httpx.Client) -> None:
    set_faults(http, "api-down")
    for path in ("/health", SEARCH, "/api/health/mlflow"):
        response = http.get(path, headers=bearer(WRITER))
        assert response.status_code == 503 and ALB_503_TITLE in response.text, path
        assert response.headers["content-type"].startswith("text/html")
    assert http.get("/mlflow/ajax-api/2.0/mlflow/experiments/search").status_code == 200
    assert http.get("/_stack/faults", headers={STACK_TOKEN_HEADER: ADMIN_TOKEN}).json()["faults"] == ["api-down"]


def test_route_not_configured(http: httpx.Client, auth: FakeAuth) -> None:
    set_faults(http, "route-not-configured")
    for headers in ({}, bearer(WRITER)):
        response = http.get(SEARCH, headers=headers)
        assert (response.status_code, response.text) == (404, "Not Found")
        assert response.headers["content-type"].startswith("text/plain")
    assert not auth.calls and http.get("/health").status_code == 200


def test_route_not_mounted(http: httpx.Client, upstream: FakeMlflow) -> None:
    set_faults(http, "route-not-mounted")
    assert http.get(SEARCH).json() == {"detail": "API key required"}
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    assert not upstream.requests


def test_mlflow_path_mismatch(http: httpx.Client, upstream: FakeMlflow) -> None:
    set_faults(http, "mlflow-path-mismatch")
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (404, {
        "error_code": "RESOURCE_NOT_FOUND", "message": "The requested resource was not found: experiments/search"})
    assert upstream.last["path"] == "/experiments/search"


def test_artifacts_disabled(http: httpx.Client, upstream: FakeMlflow) -> None:
    set_faults(http, "artifacts-disabled")
    response = http.get("/api/mlflow/api/2.0/mlflow-artifacts/artifacts/0/x", headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (503, {"detail": {
        "error": "ARTIFACTS_DISABLED",
        "message": "Artifact storage is not configured. Please contact your administrator."}})
    assert not upstream.requests
    assert http.get(SEARCH, headers=bearer(WRITER)).status_code == 200


def test_host_header(http: httpx.Client, upstream: FakeMlflow) -> None:
    set_faults(http, "host-header")
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.text) == (403, "Invalid Host header - possible DNS rebinding attack detected")
    assert response.headers["content-type"].startswith("text/plain")
    assert header(upstream.last, "host") == ["registry.hokus.ai"]


def test_strip_auth(http: httpx.Client, upstream: FakeMlflow) -> None:
    set_faults(http, "strip-auth")
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (401, {"detail": "API key required"})
    assert not upstream.requests
    direct = "/mlflow/ajax-api/2.0/mlflow/experiments/search"
    assert http.get(direct).json() == {"detail": "API key required"}  # the MLflow-side gateway
    assert http.get(direct, params={"api_key": WRITER}).status_code == 401  # gateway ignores ?api_key=
    assert http.get(direct, headers=bearer(WRITER)).status_code == 200
    assert header(upstream.last, "authorization") == [f"Bearer {WRITER}"]
    assert http.get("/mlflow/health").status_code == 200
    probe = http.get("/api/health/mlflow")
    assert probe.status_code == 503 and "API key required" in probe.json()["error"]
    set_faults(http)
    assert http.get(direct).status_code == 200


def test_wrong_service_id(http: httpx.Client, auth: FakeAuth) -> None:
    set_faults(http, "wrong-service-id")
    response = http.get(SEARCH, headers=bearer(WRITER))
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid or expired API key"})
    assert auth.calls[0]["body"]["service_id"] == "ml-platform"


def test_auth_bypass(http: httpx.Client, auth: FakeAuth, upstream: FakeMlflow) -> None:
    set_faults(http, "auth-bypass")
    assert http.get(SEARCH).status_code == 200
    assert http.post("/api/mlflow/api/2.0/mlflow/runs/create", headers=bearer("unknown"), json={}).status_code == 200
    assert not auth.calls and not header(upstream.last, "x-hokusai-user-id")


def test_revocation_delay(make_config: Any, auth: FakeAuth) -> None:
    with other_api(make_config, cache_ttl=0.2) as client:
        assert client.get(SEARCH, headers=bearer(WRITER)).status_code == 200
        auth.revoked.add(WRITER)
        time.sleep(0.3)
        assert client.get(SEARCH, headers=bearer(WRITER)).status_code == 401  # healthy: TTL expired
        set_faults(client, "revocation-delay")
        auth.revoked.clear()
        assert client.get(SEARCH, headers=bearer(WRITER)).status_code == 200
        auth.revoked.add(WRITER)
        time.sleep(0.3)
        assert client.get(SEARCH, headers=bearer(WRITER)).status_code == 200  # cached for an hour
        assert stats(client)["cache_ttl"] == 3600.0


# --- control endpoints -------------------------------------------------------------------------
def test_control_endpoints_need_the_token(http: httpx.Client) -> None:
    for headers in ({}, {STACK_TOKEN_HEADER: "wrong"}):
        assert http.get("/_stack/faults", headers=headers).status_code == 403
        assert http.put("/_stack/faults", json={"faults": ["api-down"]}, headers=headers).status_code == 403
        assert http.get("/_stack/stats", headers=headers).status_code == 403
    assert http.get("/health").status_code == 200  # the refused PUT changed nothing


def test_faults_toggle_at_runtime(http: httpx.Client) -> None:
    token = {STACK_TOKEN_HEADER: ADMIN_TOKEN}
    bad = http.put("/_stack/faults", json={"faults": ["api-down", "no-such"]}, headers=token)
    assert bad.status_code == 422 and "no-such" in bad.json()["detail"]
    assert http.put("/_stack/faults", json={"fault": []}, headers=token).status_code == 422
    body = set_faults(http, "api-down", "rate-limited").json()
    assert body == {"faults": ["api-down", "rate-limited"], "effective": ["api-down"]}
    assert http.get("/health").status_code == 503
    set_faults(http)
    assert http.get("/health").status_code == 200
    assert http.get("/_stack/faults", headers=token).json() == {"faults": [], "effective": []}


def test_faults_from_config(make_config: Any) -> None:
    with other_api(make_config, faults=["api-down"]) as client:
        assert client.get("/health").status_code == 503
        assert stats(client)["faults"] == ["api-down"]


def test_query_string_survives_unchanged(http: httpx.Client, upstream: FakeMlflow) -> None:
    http.get(f"{SEARCH}?filter=name%3D%27a+b%27&max_results=5&api_key={WRITER}")
    assert parse_qs(upstream.last["query"])["filter"] == ["name='a b'"]
    assert upstream.last["query"].startswith("filter=name%3D%27a+b%27&max_results=5&api_key=")
