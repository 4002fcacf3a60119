"""HokusaiSession, classify_error and parse_json_safely against real loopback servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions as u3exc
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pytest_hokusai.evidence import ERROR_CLASSES, Recorder
from pytest_hokusai.http import HokusaiSession, classify_error, parse_json_safely, scrub
from pytest_hokusai.secret import Secret

# Built at run time: a key-shaped constant must never be written literally in a file.
RAW_KEY = "hk_live_" + "Q7" * 14 + "wxyz"
MASKED = "hk_live_\u2026wxyz"


@pytest.fixture
def key() -> Secret:
    return Secret(RAW_KEY, source="test")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def session(recorder: Recorder, key: Secret) -> Iterator[HokusaiSession]:
    s = HokusaiSession(timeout=2.0, recorder=recorder, key=key, backoff=0.01, retry_after_cap=0.2)
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers (a hung upstream)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def assert_no_raw_key(recorder: Recorder) -> None:
    blob = json.dumps([e.to_dict() for e in recorder.all()], default=str)
    assert RAW_KEY not in blob
    assert RAW_KEY[len("hk_live_"):] not in blob


# -- key presentation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("style", "header", "value", "shown"),
    [
        ("bearer", "Authorization", f"Bearer {RAW_KEY}", f"Bearer {MASKED}"),
        ("apikey", "Authorization", f"ApiKey {RAW_KEY}", f"ApiKey {MASKED}"),
        ("x-api-key", "X-API-Key", RAW_KEY, f"X-API-Key {MASKED}"),
    ],
)
def test_key_is_sent_in_style_and_recorded_masked(httpserver: HTTPServer, session: HokusaiSession,
                                                  recorder: Recorder, style: str, header: str, value: str,
                                                  shown: str) -> None:
    httpserver.expect_request("/thing", headers={header: value}).respond_with_json({"ok": True})
    response = session.get(httpserver.url_for("/thing"), auth_style=style, label="t")
    assert response.status_code == 200
    [exchange] = recorder.all()
    assert exchange.auth == shown
    assert exchange.status == 200 and exchange.label == "t"
    assert exchange.content_type == "application/json"
    assert_no_raw_key(recorder)


def test_query_key_is_removed_from_recorded_url(httpserver: HTTPServer, session: HokusaiSession,
                                                recorder: Recorder) -> None:
    httpserver.expect_request("/q", query_string={"a": "1", "api_key": RAW_KEY}).respond_with_data("fine")
    response = session.get(httpserver.url_for("/q"), params={"a": "1"}, auth_style="query")
    assert response.status_code == 200
    [exchange] = recorder.all()
    assert "api_key=***" in exchange.url and "a=1" in exchange.url
    assert exchange.auth == f"query api_key={MASKED}"
    assert_no_raw_key(recorder)


def test_body_style_puts_the_key_in_the_json_body_only(httpserver: HTTPServer, session: HokusaiSession,
                                                       recorder: Recorder) -> None:
    httpserver.expect_request("/v", method="POST").respond_with_json({"is_valid": True})
    session.post(httpserver.url_for("/v"), json={"service_id": "platform"}, auth_style="body")
    request, _ = httpserver.log[0]
    assert request.get_json() == {"api_key": RAW_KEY, "service_id": "platform"}
    assert "Authorization" not in request.headers
    assert recorder.all()[0].auth == f"body api_key={MASKED}"
    assert_no_raw_key(recorder)


def test_per_request_key_none_sends_nothing(httpserver: HTTPServer, session: HokusaiSession,
                                            recorder: Recorder) -> None:
    httpserver.expect_request("/n").respond_with_data("x")
    session.get(httpserver.url_for("/n"), key=None)
    request, _ = httpserver.log[0]
    assert "Authorization" not in request.headers and "X-API-Key" not in request.headers
    assert recorder.all()[0].auth == "none"


def test_explicit_authorization_header_is_sent_as_given_and_recorded_masked(
        httpserver: HTTPServer, session: HokusaiSession, recorder: Recorder) -> None:
    httpserver.expect_request("/raw").respond_with_data("x", status=401)
    session.get(httpserver.url_for("/raw"), headers={"Authorization": RAW_KEY})
    session.get(httpserver.url_for("/raw"), headers={"Authorization": f"bearer {RAW_KEY}"})
    session.get(httpserver.url_for("/raw"), headers={"Authorization": "Basic dXNlcjpwYXNzd29yZA=="})
    sent = [request.headers["Authorization"] for request, _ in httpserver.log]
    assert sent == [RAW_KEY, f"bearer {RAW_KEY}", "Basic dXNlcjpwYXNzd29yZA=="]
    assert [e.auth for e in recorder.all()] == [MASKED, f"bearer {MASKED}", "Basic \u2026ZA=="]
    assert_no_raw_key(recorder)


def test_echoed_key_in_body_and_headers_is_redacted(httpserver: HTTPServer, session: HokusaiSession,
                                                    recorder: Recorder) -> None:
    httpserver.expect_request("/echo").respond_with_json(
        {"detail": f"bad key {RAW_KEY}"}, status=401, headers={"WWW-Authenticate": f"Bearer {RAW_KEY}"})
    session.get(httpserver.url_for("/echo"))
    [exchange] = recorder.all()
    assert MASKED in exchange.body_excerpt
    assert exchange.headers["www-authenticate"] == f"Bearer {MASKED}"
    assert_no_raw_key(recorder)


# -- timeouts and network errors -------------------------------------------------------------------
def test_default_timeout_applies_and_is_classified(silent_server: str, recorder: Recorder, key: Secret) -> None:
    session = HokusaiSession(timeout=0.5, recorder=recorder, key=key)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(silent_server + "/slow", json={})
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    [exchange] = recorder.all()
    assert exchange.status is None and exchange.error == "timeout"
    assert 400 <= exchange.elapsed_ms < 2000
    assert exchange.auth == f"Bearer {MASKED}"
    session.close()


def test_probe_never_raises_and_is_bounded(silent_server: str, session: HokusaiSession) -> None:
    started = time.monotonic()
    result = session.probe("GET", silent_server + "/x", label="probe:slow", timeout=0.4)
    assert time.monotonic() - started < 2.0
    assert result.response is None and result.json is None
    assert result.exchange.error == "timeout" and result.exchange.label == "probe:slow"


def test_refused_port(session: HokusaiSession, recorder: Recorder) -> None:
    url = f"http://127.0.0.1:{free_port()}/health?api_key={RAW_KEY}"
    result = session.probe("GET", url)
    assert result.exchange.error == "refused"
    assert result.exchange.status is None
    assert "api_key=***" in result.exchange.url
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url)
    assert [e.error for e in recorder.all()] == ["refused", "refused"]
    assert_no_raw_key(recorder)


def test_tls_to_a_plain_http_server(httpserver: HTTPServer, session: HokusaiSession) -> None:
    result = session.probe("GET", httpserver.url_for("/").replace("http://", "https://"))
    assert result.exchange.error == "tls"


def test_invalid_url(session: HokusaiSession) -> None:
    result = session.probe("GET", "http://[::1/broken")
    assert result.exchange.error == "invalid-url"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (u3exc.NameResolutionError("nohost.invalid", None, socket.gaierror(-2, "Name or service not known")),  # type: ignore[arg-type]
         "dns"),
        (requests.exceptions.ConnectionError(u3exc.MaxRetryError(None, "/", socket.gaierror(-3, "Temporary failure in name resolution"))),  # type: ignore[arg-type]
         "dns"),
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (requests.exceptions.ConnectTimeout("connect timed out"), "timeout"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), "tls"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection"),
        (requests.exceptions.ChunkedEncodingError("broken"), "connection"),
        (requests.exceptions.MissingSchema("no scheme"), "invalid-url"),
        (RuntimeError("boom"), "other"),
    ],
)
def test_classify_error(exc: BaseException, expected: str) -> None:
    kind, detail = classify_error(exc)
    assert kind == expected and kind in ERROR_CLASSES
    assert detail and len(detail) <= 240


def test_classify_error_follows_the_cause_chain_and_redacts() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, f"Connection refused for ?api_key={RAW_KEY}")
        except ConnectionRefusedError as inner:
            raise RuntimeError("API request failed") from inner  # like MlflowException
    except RuntimeError as outer:
        kind, detail = classify_error(outer)
    assert kind == "refused"
    assert RAW_KEY not in detail and "api_key=***" in detail


# -- retries ---------------------------------------------------------------------------------------
def test_get_is_retried_on_503_post_is_not(httpserver: HTTPServer, session: HokusaiSession,
                                           recorder: Recorder) -> None:
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    assert session.get(httpserver.url_for("/busy")).status_code == 503
    assert len(httpserver.log) == 3  # 1 + 2 retries
    assert recorder.all()[0].headers.get("attempts") == "3"
    httpserver.clear_log()
    assert session.post(httpserver.url_for("/busy"), json={}).status_code == 503
    assert len(httpserver.log) == 1
    assert "attempts" not in recorder.all()[1].headers


def test_no_retry_on_500_or_429(httpserver: HTTPServer, session: HokusaiSession) -> None:
    httpserver.expect_request("/e").respond_with_data("x", status=500)
    httpserver.expect_request("/r").respond_with_data("x", status=429, headers={"Retry-After": "1"})
    session.get(httpserver.url_for("/e"))
    session.get(httpserver.url_for("/r"))
    assert len(httpserver.log) == 2


def test_retry_after_is_capped(httpserver: HTTPServer, session: HokusaiSession, recorder: Recorder) -> None:
    httpserver.expect_request("/later").respond_with_data("wait", status=503, headers={"Retry-After": "30"})
    started = time.monotonic()
    response = session.get(httpserver.url_for("/later"))
    assert time.monotonic() - started < 3.0
    assert response.status_code == 503 and len(httpserver.log) == 3
    assert recorder.all()[0].headers["retry-after"] == "30"


def test_retry_then_success(httpserver: HTTPServer, session: HokusaiSession) -> None:
    calls: list[int] = []

    def flaky(request: Request) -> Response:
        calls.append(1)
        return Response("no", status=502) if len(calls) == 1 else Response("{}", content_type="application/json")

    httpserver.expect_request("/flaky").respond_with_handler(flaky)
    assert session.get(httpserver.url_for("/flaky")).status_code == 200
    assert len(calls) == 2


def test_probe_does_not_retry_unless_asked(httpserver: HTTPServer, session: HokusaiSession) -> None:
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    assert session.probe("GET", httpserver.url_for("/busy")).status == 503
    assert len(httpserver.log) == 1
    assert session.probe("GET", httpserver.url_for("/busy"), retries=True).status == 503
    assert len(httpserver.log) == 4


# -- bodies ----------------------------------------------------------------------------------------
def test_probe_parses_json_and_reads_detail(httpserver: HTTPServer, session: HokusaiSession) -> None:
    httpserver.expect_request("/j").respond_with_json({"detail": "API key required"}, status=401)
    result = session.probe("GET", httpserver.url_for("/j"), auth_style="x-api-key")
    assert result.status == 401 and result.json == {"detail": "API key required"}
    assert result.detail() == "API key required" and result.json_problem is None
    assert result.exchange.auth == f"X-API-Key {MASKED}"
    assert json.loads(result.exchange.body_excerpt) == {"detail": "API key required"}


def test_probe_body_is_bounded(httpserver: HTTPServer, session: HokusaiSession) -> None:
    httpserver.expect_request("/big").respond_with_data("a" * 100_000)
    result = session.probe("GET", httpserver.url_for("/big"), max_body=10_000)
    assert result.response is not None and len(result.response.content) == 10_000
    assert "body-truncated" in result.exchange.headers


def test_streamed_request_is_recorded_without_consuming_the_body(httpserver: HTTPServer,
                                                                 session: HokusaiSession,
                                                                 recorder: Recorder) -> None:
    httpserver.expect_request("/s").respond_with_data("streamed body")
    response = session.get(httpserver.url_for("/s"), stream=True)
    assert recorder.all()[0].body_excerpt == ""
    assert response.content == b"streamed body"


def test_html_where_json_was_expected(httpserver: HTTPServer, session: HokusaiSession) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"
    httpserver.expect_request("/api").respond_with_data(page, status=502, content_type="text/html")
    result = session.probe("GET", httpserver.url_for("/api"))
    assert result.json is None
    problem = result.json_problem
    assert problem is not None
    assert problem.startswith(f"expected JSON from GET {httpserver.url_for('/api')} but got text/html (502")
    assert "load balancer" in problem and "502 Bad Gateway" in problem


def test_parse_json_safely_cases(httpserver: HTTPServer, session: HokusaiSession) -> None:
    httpserver.expect_request("/ok").respond_with_json([1, 2])
    httpserver.expect_request("/empty").respond_with_data("", status=204)
    httpserver.expect_request("/bad").respond_with_data("{nope", content_type="application/json")
    httpserver.expect_request("/text").respond_with_data("Not Found", status=404, content_type="text/plain")
    assert parse_json_safely(session.get(httpserver.url_for("/ok"))) == ([1, 2], None)
    assert "body was empty" in (parse_json_safely(session.get(httpserver.url_for("/empty")))[1] or "")
    assert "invalid JSON" in (parse_json_safely(session.get(httpserver.url_for("/bad")))[1] or "")
    obj, problem = parse_json_safely(session.get(httpserver.url_for("/text")))
    assert obj is None and problem is not None and "text/plain (404)" in problem and "Not Found" in problem


def test_redirect_chain_is_recorded(httpserver: HTTPServer, session: HokusaiSession, recorder: Recorder) -> None:
    httpserver.expect_request("/old").respond_with_data("", status=308, headers={"Location": "/new"})
    httpserver.expect_request("/new").respond_with_data("here")
    assert session.get(httpserver.url_for("/old")).status_code == 200
    exchange = recorder.all()[0]
    assert exchange.headers["redirects"].startswith("308 ")


def test_scrub_masks_unknown_key_shapes_and_query_secrets() -> None:
    other = "hk_test_" + "Z" * 36 + "abcd"
    text = scrub(f"token {other} at https://h/p?x=1&token=s3cr3t")
    assert other not in text and "hk_test_\u2026abcd" in text and "token=***" in text


def test_session_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="auth_style"):
        HokusaiSession(auth_style="basic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        HokusaiSession(timeout=0)
