"""The HTTP/1.1 driver (stereo.asgi.http) over real sockets, in-process: a listening socket on
127.0.0.1, stereo's own Listener, and tiny ASGI apps. Waits are on bytes or EOF, under
trio.fail_after; nothing sleeps to synchronise."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from stereo.asgi.context import ServerContext
from stereo.asgi.http import refuse_busy, serve_connection
from stereo.asgi.settings import AsgiSettings
from stereo.worker.listeners import ConnectionTracker, Listener

App = Callable[[Any, Any, Any], Awaitable[None]]


@dataclass
class Server:
    port: int
    ctx: ServerContext
    log: io.StringIO
    access: io.StringIO
    tracker: ConnectionTracker
    clients: list[Client] = field(default_factory=list)

    async def connect(self) -> Client:
        client = Client(await trio.open_tcp_stream("127.0.0.1", self.port))
        self.clients.append(client)
        return client


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Client:
    stream: trio.SocketStream
    buf: bytes = field(default=b"")

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(self.buf)
        self.buf += data

    async def _take(self, size: int) -> bytes:
        while len(self.buf) < size:
            await self._fill()
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            await self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    async def response(self, *, head: bool = False) -> Response:
        with trio.fail_after(5):
            while b"\r\n\r\n" not in self.buf:
                await self._fill()
            raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
            line, *fields = raw.split(b"\r\n")
            status = int(line.split(b" ")[1])
            headers = {}
            for item in fields:
                name, value = item.split(b": ", 1)
                assert name.lower() not in headers, f"{name!r} twice"
                headers[name.lower()] = value
            body = b""
            if head or status in (100, 204, 304):
                pass
            elif b"content-length" in headers:
                body = await self._take(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding") == b"chunked":
                while size := int((await self._line()).split(b";")[0], 16):
                    body += await self._take(size)
                    assert await self._take(2) == b"\r\n"
                while await self._line():
                    pass  # trailers
            else:
                await self.closed()
                body, self.buf = self.buf, b""
            return Response(status, headers, body)

    async def closed(self) -> None:
        """Wait for the server to end the connection (a reset counts as an end)."""
        with trio.fail_after(5):
            try:
                while data := await self.stream.receive_some(65536):
                    self.buf += data
            except trio.BrokenResourceError:
                pass


def get(path: str = "/", *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += message["body"]
        if not message.get("more_body", False):
            return body


async def respond(send: Any, body: bytes, status: int = 200, **kw: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": kw.get("headers", [])})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body = await read_body(receive)
    text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} {len(body)}"
    await respond(send, text.encode() + b" " + body)


@asynccontextmanager
async def serving(app: App, **options: Any) -> AsyncIterator[Server]:
    options.setdefault("timeout_keep_alive", 30.0)
    log, access = io.StringIO(), io.StringIO()
    ctx = ServerContext(app, AsgiSettings(**options), log=log, access_log=access)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    tracker = ConnectionTracker()
    listener = Listener(sock, tracker)

    async def handler(stream: Any) -> None:
        try:
            await serve_connection(stream, ctx)
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [listener])
        server = Server(sock.getsockname()[1], ctx, log, access, tracker)
        try:
            yield server
        finally:
            for client in server.clients:
                await client.stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_keep_alive_and_three_pipelined_requests_answered_in_order(parser: str) -> None:
    async with serving(echo, http=parser) as server:
        client = await server.connect()
        await client.send(get("/first?x=1"))
        first = await client.response()
        assert first.status == 200 and first.body == b"GET /first x=1 0 "
        assert first.headers[b"server"] == b"stereo" and b"connection" not in first.headers
        post = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
        await client.send(get("/1") + post + get("/3"))
        bodies = [(await client.response()).body for _ in range(3)]
        assert bodies == [b"GET /1  0 ", b"POST /p  5 hello", b"GET /3  0 "]
        assert server.tracker.open == 1


async def test_a_chunked_request_body_and_a_streamed_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        for part in (body[:3], body[3:]):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    async with serving(app) as server:
        client = await server.connect()
        await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        await client.send(b"4\r\nabcd\r\n")
        await client.send(b"3\r\nefg\r\n0\r\n\r\n")
        response = await client.response()
        assert response.status == 201 and response.body == b"abcdefg"
        assert response.headers[b"transfer-encoding"] == b"chunked"


async def test_100_continue_only_when_the_app_reads_the_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/reject":
            await respond(send, b"no", status=417)
        else:
            await respond(send, await read_body(receive))

    async with serving(app) as server:
        client = await server.connect()
        head = b"PUT /%s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        await client.send(head % b"take")
        assert (await client.response()).status == 100
        await client.send(b"data")
        assert (await client.response()).body == b"data"
        await client.send(head % b"reject")
        response = await client.response()
        assert response.status == 417  # no 100 before it: the body was never asked for
        await client.closed()  # the unsent body cannot be skipped: the connection ends


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400, b"malformed request"),
        (get("/", "X: " + "a" * 2000), 431, b"--max-header-size"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413, b"--max-body-size"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501, b"chunked"),
    ],
)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_refusals_are_explained_and_end_the_connection(
    request_bytes: bytes, status: int, reason: bytes, parser: str
) -> None:
    async with serving(echo, http=parser, max_header_size=1024, max_body_size=1000) as server:
        client = await server.connect()
        await client.send(get("/ok") + request_bytes)
        assert (await client.response()).status == 200
        response = await client.response()
        assert response.status == status and reason in response.body
        assert response.body.startswith(b"%d " % status)
        assert response.headers[b"connection"] == b"close"
        await client.closed()


async def test_a_chunked_body_past_the_limit_is_413_even_mid_request() -> None:
    async with serving(echo, max_body_size=10) as server:
        client = await server.connect()
        await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        await client.send(b"8\r\n12345678\r\n")
        await client.send(b"8\r\n12345678\r\n")
        response = await client.response()
        assert response.status == 413
        await client.closed()


async def test_an_app_that_raises_gets_a_500_and_the_worker_serves_on() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise ValueError("boom")
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise ValueError("late")
        if scope["path"] == "/nothing":
            return
        if scope["path"] == "/bad-message":
            await send({"type": "http.response.bogus"})
        await respond(send, b"fine")

    async with serving(app) as server:
        for path in ("/boom", "/nothing", "/bad-message"):
            client = await server.connect()
            await client.send(get(path))
            response = await client.response()
            assert response.status == 500 and response.body == b"Internal Server Error\n"
            assert response.headers[b"connection"] == b"close"
            await client.closed()
        client = await server.connect()
        await client.send(get("/late"))
        with pytest.raises(EOFError):
            await client.response()  # the chunked body never ends: only the close says so
        client = await server.connect()
        await client.send(get("/"))
        assert (await client.response()).body == b"fine"
    log = server.log.getvalue()
    assert "ValueError: boom" in log and "ValueError: late" in log
    assert "without a response to /nothing" in log and "http.response.bogus" in log


async def test_head_has_no_body_and_http_1_0_closes() -> None:
    async with serving(echo) as server:
        client = await server.connect()
        await client.send(get("/h", method="HEAD") + get("/after"))
        head = await client.response(head=True)
        assert head.status == 200 and head.headers[b"content-length"] == b"11"
        assert (await client.response()).body == b"GET /after  0 "
        client = await server.connect()
        await client.send(get("/old", version="1.0"))
        response = await client.response()
        assert response.body == b"GET /old  0 " and response.headers[b"connection"] == b"close"
        await client.closed()
        client = await server.connect()
        await client.send(get("/1", "Connection: keep-alive", version="1.0"))
        response = await client.response()
        assert response.headers[b"connection"] == b"keep-alive"
        await client.send(get("/2", version="1.1"))
        assert (await client.response()).body == b"GET /2  0 "


async def test_drain_closes_idle_connections_at_once_and_finishes_the_busy_one() -> None:
    entered, release = trio.Event(), trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await respond(send, b"done")

    async with serving(app) as server:
        idle = await server.connect()
        await idle.send(get("/"))
        await idle.response()
        busy = await server.connect()
        await busy.send(get("/slow"))
        with trio.fail_after(5):
            await entered.wait()
        server.ctx.begin_drain()
        await idle.closed()  # at once: the slow request is still under way
        release.set()
        response = await busy.response()
        assert response.body == b"done" and response.headers[b"connection"] == b"close"
        await busy.closed()
        late = await server.connect()  # accepted as the drain began: its one request served
        await late.send(get("/") + get("/never"))
        response = await late.response()
        assert response.body == b"done" and response.headers[b"connection"] == b"close"
        await late.closed()
        assert late.buf == b""  # (a reset would have raised)


async def test_the_keep_alive_timeout_closes_idle_connections_quietly() -> None:
    async with serving(echo, timeout_keep_alive=0.2) as server:
        client = await server.connect()
        await client.send(get("/"))
        await client.response()
        await client.closed()
        silent = await server.connect()  # never sends a byte
        await silent.closed()
    assert server.log.getvalue() == ""


async def test_receive_after_the_body_waits_for_the_disconnect() -> None:
    disconnected = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
        assert await receive() == {"type": "http.disconnect"}
        disconnected.set()
        with pytest.raises(OSError):
            await send({"type": "http.response.body", "body": b"more", "more_body": True})

    async with serving(app) as server:
        client = await server.connect()
        await client.send(get("/"))
        with trio.fail_after(5):
            while b"streaming" not in client.buf:
                await client._fill()
        await client.stream.aclose()
        with trio.fail_after(5):
            await disconnected.wait()
    assert server.log.getvalue() == ""


async def test_scope_and_access_log() -> None:
    scopes = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send, b"", status=204)

    async with serving(app, access_log=True, root_path="/api") as server:
        client = await server.connect()
        await client.send(get("/a%20b?q=1", "X-Forwarded-For: 10.1.2.3"))
        assert (await client.response()).status == 204
        with trio.fail_after(5):
            while not server.access.getvalue():
                await (
                    trio.lowlevel.checkpoint()
                )  # the log is written when the scheduler comes round
    scope = scopes[0]
    assert scope["type"] == "http" and scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope["path"] == "/api/a b" and scope["raw_path"] == b"/api/a%20b"
    assert scope["query_string"] == b"q=1" and scope["root_path"] == "/api"
    assert scope["client"] == ("10.1.2.3", 0) and scope["server"] == ("127.0.0.1", server.port)
    assert (b"x-forwarded-for", b"10.1.2.3") in scope["headers"]
    assert server.access.getvalue() == '10.1.2.3:0 - "GET /a%20b?q=1 HTTP/1.1" 204\n'


async def test_refuse_busy_answers_503() -> None:
    async with serving(echo) as server:
        client = await server.connect()
        await client.send(get("/"))
        # Over the limit: the server's side of a second connection goes to refuse_busy.
        left, right = trio.socket.socketpair()
        stream = trio.SocketStream(left)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse_busy, stream)
            peer = Client(trio.SocketStream(right))
            server.clients.append(peer)
            await peer.send(get("/"))
            response = await peer.response()
            assert response.status == 503 and response.headers[b"connection"] == b"close"
            await peer.closed()
            await peer.stream.aclose()  # ends refuse_busy's lingering read
        assert (await client.response()).status == 200


async def test_websocket_upgrades_are_handed_over_with_the_bytes_after_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stereo.asgi.websocket as websocket

    handed: list[Any] = []

    async def fake(
        stream: Any, head: Any, leftover: bytes, ctx: Any, client: Any, server: Any
    ) -> None:
        handed.append((head.target, leftover, client[0], server[1]))
        await stream.send_all(b"switched")

    monkeypatch.setattr(websocket, "serve_websocket", fake)
    async with serving(echo) as server:
        client = await server.connect()
        ws = get("/ws", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: x")
        await client.send(get("/") + ws + b"\x81\x80frame")
        assert (await client.response()).status == 200
        await client.closed()
        assert client.buf == b"switched"
    assert handed == [(b"/ws", b"\x81\x80frame", "127.0.0.1", server.port)]


async def test_large_bodies_and_long_pipelines_are_read_whole() -> None:
    """More than one read's worth at once: a socket watched edge-triggered must be read until
    it is empty before waiting again, or the rest would never be noticed."""
    with trio.fail_after(10):
        async with serving(echo, max_body_size=1 << 20) as server:
            client = await server.connect()
            body = bytes(range(256)) * 1024  # 256 KiB: four reads at least
            head = b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            await client.send(head + body + get("/after"))
            response = await client.response()
            assert response.body == b"POST /big  %d " % len(body) + body
            assert (await client.response()).body == b"GET /after  0 "
            many = b"".join(get(f"/{i}") for i in range(300))  # about 10 KiB per 300
            await client.send(many * 10)
            paths = [(await client.response()).body.split()[1] for _ in range(3000)]
            assert paths == [f"/{i}".encode() for i in range(300)] * 10


async def test_a_unix_socket_has_no_client_or_server_address() -> None:
    scopes = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send, b"unix")

    ctx = ServerContext(app, AsgiSettings(), log=io.StringIO(), access_log=io.StringIO())
    left, right = trio.socket.socketpair()
    server_side, client = trio.SocketStream(left), Client(trio.SocketStream(right))

    async def serve() -> None:
        async with server_side:  # the caller closes the stream, as server.py does
            await serve_connection(server_side, ctx)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, client.stream:
            nursery.start_soon(serve)
            await client.send(get("/u"))
            assert (await client.response()).body == b"unix"
            await client.stream.send_eof()
            await client.closed()
    assert scopes[0]["client"] is None and scopes[0]["server"] is None
