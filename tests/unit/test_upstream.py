"""The proxy's upstream client (stack/upstream.py) against a scripted loopback HTTP server: framing
both ways, keep-alive reuse, a server that closed an idle connection, early answers, and every
failure as the httpx exception the proxy maps to 502/504."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

pytest.importorskip("httptools")

from pytest_hokusai.stack.upstream import UpstreamPool, _Connection

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(request line, headers by lower-case name, body with chunked framing removed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(b":", 1) for x in lines)}
    body = b""
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    return line, headers, body


async def serve(handler: Handler, scenario: Callable[[str, dict], Awaitable[None]]) -> dict:
    """Run ``scenario(base_url, seen)`` against a server whose connections ``handler`` serves."""
    seen: dict = {"connections": 0, "requests": []}

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            await handler(reader, writer, seen)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await scenario(f"http://127.0.0.1:{port}", seen)
    finally:
        server.close()
    return seen


def keep_alive_json(body: bytes = b'{"ok": true}') -> Handler:
    async def handler(reader, writer, seen):
        while True:
            line, headers, sent = await read_request(reader)
            seen["requests"].append((line, headers, sent))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                         % (len(body), body))
            await writer.drain()
    return handler


async def fetch(pool: UpstreamPool, method: str, url: str, body: AsyncIterator[bytes] | None = None,
                headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
    response = await pool.open(method, url, headers or [], body)
    try:
        return response.status_code, b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_keep_alive_reuses_one_connection_and_sends_host_and_query():
    async def scenario(url, seen):
        pool = UpstreamPool(5.0)
        for _ in range(3):
            assert await fetch(pool, "GET", url + "/api/2.0/mlflow/experiments/search?max_results=1") == \
                (200, b'{"ok": true}')
        await pool.aclose()

    seen = asyncio.run(serve(keep_alive_json(), scenario))
    assert seen["connections"] == 1
    line, headers, _ = seen["requests"][0]
    assert line == b"GET /api/2.0/mlflow/experiments/search?max_results=1 HTTP/1.1"
    assert headers[b"host"].startswith(b"127.0.0.1:")


def test_a_body_of_unknown_length_goes_chunked_a_sized_one_as_is_an_empty_post_says_zero():
    async def scenario(url, seen):
        pool = UpstreamPool(5.0)
        await fetch(pool, "PUT", url + "/a", chunks(b"abc", b"", b"defgh"))
        await fetch(pool, "POST", url + "/b", chunks(b"12345"), [(b"content-length", b"5")])
        await fetch(pool, "POST", url + "/c")
        await pool.aclose()

    seen = asyncio.run(serve(keep_alive_json(), scenario))
    (_, chunked, body_a), (_, sized, body_b), (_, empty, body_c) = seen["requests"]
    assert chunked[b"transfer-encoding"] == b"chunked" and body_a == b"abcdefgh"
    assert b"transfer-encoding" not in sized and body_b == b"12345"
    assert empty[b"content-length"] == b"0" and body_c == b""


def test_a_chunked_answer_streams_piece_by_piece():
    async def handler(reader, writer, seen):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"first ", b"second ", b"third"):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection open until the client goes

    async def scenario(url, seen):
        pool = UpstreamPool(5.0)
        response = await pool.open("GET", url + "/stream", [], None)
        received = [chunk async for chunk in response.aiter_raw()]
        await response.aclose()
        await pool.aclose()
        assert b"".join(received) == b"first second third" and len(received) >= 2

    asyncio.run(serve(handler, scenario))


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_answers_without_a_body(method, status):
    async def handler(reader, writer, seen):
        while True:
            await read_request(reader)
            # HEAD: the length of the body a GET would get, and no body
            writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n" % (status, 0 if status != 200 else 99))
            await writer.drain()

    async def scenario(url, seen):
        pool = UpstreamPool(2.0)
        assert await fetch(pool, method, url + "/x") == (status, b"")
        assert await fetch(pool, method, url + "/x") == (status, b"")
        await pool.aclose()

    seen = asyncio.run(serve(handler, scenario))
    # after a HEAD the parser still waits for the announced body: that connection is not reused
    assert seen["connections"] == (2 if method == "HEAD" else 1)


def test_a_body_delimited_by_the_end_of_the_connection():
    async def handler(reader, writer, seen):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario(url, seen):
        pool = UpstreamPool(2.0)
        assert await fetch(pool, "GET", url + "/x") == (200, b"until the end")
        await pool.aclose()

    asyncio.run(serve(handler, scenario))


async def answers_once_then_closes(reader, writer, seen):
    """One answer per connection, then the close uvicorn gives an idle keep-alive connection."""
    line, _, _ = await read_request(reader)
    seen["requests"].append(line)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()


def test_an_idle_connection_the_server_closed_is_replaced():
    async def scenario(url, seen):
        pool = UpstreamPool(2.0)
        assert await fetch(pool, "GET", url + "/1") == (200, b"ok")
        await asyncio.sleep(0.1)  # the close arrives while the connection is idle in the pool
        assert await fetch(pool, "GET", url + "/2") == (200, b"ok")
        await pool.aclose()

    seen = asyncio.run(serve(answers_once_then_closes, scenario))
    assert seen["connections"] == 2 and len(seen["requests"]) == 2


def test_a_request_the_server_closed_under_is_sent_again_once_if_it_has_no_body(monkeypatch):
    # The close crosses the request on the wire: the pool's idle check still saw an open connection.
    monkeypatch.setattr(_Connection, "idle_and_open", lambda self: True)

    async def scenario(url, seen):
        pool = UpstreamPool(2.0)
        assert await fetch(pool, "GET", url + "/1") == (200, b"ok")
        await asyncio.sleep(0.1)
        assert await fetch(pool, "GET", url + "/2") == (200, b"ok")  # sent again on a new connection
        assert await fetch(pool, "GET", url + "/3") == (200, b"ok")
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.RemoteProtocolError):  # a body may not be sent twice
            await fetch(pool, "PUT", url + "/4", chunks(b"once"))
        await pool.aclose()

    seen = asyncio.run(serve(answers_once_then_closes, scenario))
    assert [line.split()[1] for line in seen["requests"]] == [b"/1", b"/2", b"/3"]


def test_an_answer_sent_before_the_upload_ended_is_relayed():
    async def handler(reader, writer, seen):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!")
        await writer.drain()
        while await reader.read(1 << 20):  # drains what still comes, as uvicorn does
            pass

    async def scenario(url, seen):
        pool = UpstreamPool(5.0)
        assert await fetch(pool, "PUT", url + "/upload", big_body()) == (413, b"too big!")
        await pool.aclose()

    asyncio.run(serve(handler, scenario))


def test_a_server_that_hangs_up_during_the_upload_is_a_write_error_not_a_hang():
    async def handler(reader, writer, seen):
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()  # reset: nothing to relay

    async def scenario(url, seen):
        pool = UpstreamPool(5.0)
        with pytest.raises((httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)):
            await fetch(pool, "PUT", url + "/upload", big_body())
        await pool.aclose()

    asyncio.run(serve(handler, scenario))


async def big_body() -> AsyncIterator[bytes]:
    for _ in range(64):
        yield b"x" * 1024 * 1024
        await asyncio.sleep(0)


def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def refused():
        pool = UpstreamPool(2.0)
        with pytest.raises(httpx.ConnectError):
            await pool.open("GET", closed + "/x", [], None)
        await pool.aclose()

    asyncio.run(refused())


async def never_answers(reader, writer, seen):
    await reader.read()


async def answers_garbage(reader, writer, seen):
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


async def cuts_the_body(reader, writer, seen):
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
    await writer.drain()


@pytest.mark.parametrize(("handler", "error"), [
    (never_answers, httpx.TimeoutException),  # the proxy's 504
    (answers_garbage, httpx.RemoteProtocolError),
    (cuts_the_body, httpx.ReadError),
])
def test_failures_are_the_httpx_errors_the_proxy_maps(handler, error):
    async def scenario(url, seen):
        pool = UpstreamPool(0.5)
        with pytest.raises(error):
            await fetch(pool, "GET", url + "/x")
        await pool.aclose()

    asyncio.run(serve(handler, scenario))


def test_a_read_that_stops_midway_closes_the_connection_instead_of_reusing_it():
    async def scenario(url, seen):
        pool = UpstreamPool(2.0)
        response = await pool.open("GET", url + "/x", [], None)
        await response.aclose()  # nothing read: the answer may still be arriving
        assert await fetch(pool, "GET", url + "/y") == (200, b"x" * 300_000)
        await pool.aclose()

    seen = asyncio.run(serve(keep_alive_json(b"x" * 300_000), scenario))
    assert seen["connections"] == 2
