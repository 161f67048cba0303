"""Serving HTTP/1.1 on one accepted connection: the trio driver around :mod:`.h1` and
:mod:`.h1_response`.

The app runs inline in the connection's task, one request after the other (pipelined requests
are answered in order): no task, nursery or cancel scope per request. One cancel scope per
connection covers its waits for a request: the keep-alive sweep (:mod:`.idle`) and the drain
cancel it only while the connection is idle, so a request under way is never cut; it finishes
with ``Connection: close``.
"""

from __future__ import annotations

import socket as stdlib_socket
import traceback
from http import HTTPStatus
from typing import Any

import trio

from ..errors import ClientDisconnected
from .context import ServerContext
from .fastio import PeerGone, SocketIO
from .h1 import END, NEED_DATA, Data, Limits, Request, RequestError, RequestParser, Upgrade
from .h1 import make_parser as _make_parser
from .h1_response import CONTINUE, ResponseWriter, simple_response
from .scope import Address, RequestHead, make_scope

RECEIVE_SIZE = 65536
# While the app streams a response after reading the whole request, we read on to notice a
# disconnect; bytes of the next request are kept, up to this much, then reading stops.
MAX_READ_AHEAD = 256 * 1024
# Before closing, read (and drop) what the client still sends for this long: closing with
# unread bytes makes the kernel reset the connection, which can destroy our last answer before
# the client reads it, or turn the close of an idle connection into an error for the client.
LINGER_SECONDS = 2.0

_DISCONNECT = {"type": "http.disconnect"}


def addresses(sock: trio.socket.SocketType) -> tuple[Address | None, Address | None]:
    """The ASGI client and server of a connection (None for unix sockets, as uvicorn)."""
    if sock.family not in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
        return None, None
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:  # already reset by the peer
        return None, None
    return (peer[0], peer[1]), (local[0], local[1])


async def serve_connection(stream: Any, ctx: ServerContext) -> None:
    """Serve HTTP/1.1 requests on ``stream`` (a listeners.Connection) until either side ends
    it; the caller closes the stream."""
    client, server = addresses(stream.socket)
    await _HttpConnection(stream, ctx, client, server).run()


async def refuse_busy(stream: Any) -> None:
    """Answer 503 at once (over --limit-concurrency) and end the connection."""
    await _refuse(stream, simple_response(503, b"Service Unavailable\n", close=True))


async def _refuse(stream: Any, response: bytes) -> None:
    try:
        await stream.send_all(response)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    await _linger(stream)


async def _linger(stream: Any) -> None:
    """End the connection with a FIN the client can read, not a reset: send our end of stream,
    then read and drop what the client still sends until it closes too (bounded)."""
    try:
        await stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS):
            while await stream.receive_some(RECEIVE_SIZE):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    await stream.aclose()


def _refusal(error: RequestError) -> bytes:
    phrase = HTTPStatus(error.status).phrase
    return simple_response(
        error.status, f"{error.status} {phrase}: {error.detail}\n".encode(), close=True
    )


class _HttpConnection:
    def __init__(
        self, stream: Any, ctx: ServerContext, client: Address | None, server: Address | None
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client = client
        self.server = server
        settings = ctx.settings
        self.parser: RequestParser = _make_parser(
            settings.http, Limits(settings.max_header_size, settings.max_body_size)
        )
        self.read_ahead = 0
        self.io = SocketIO(stream.socket)
        self.access_log = settings.access_log

    async def receive(self) -> bytes:
        """The next bytes from the client; b"" once it is gone."""
        return await self.io.receive(RECEIVE_SIZE)

    async def send(self, data: bytes) -> None:
        try:
            await self.io.send_all(data)
        except PeerGone as exc:
            raise ClientDisconnected("the client closed the connection") from exc

    async def run(self) -> None:
        ctx = self.ctx
        parser = self.parser
        idle = ctx.idle
        timer = trio.CancelScope()  # cancelled by the keep-alive sweep or the drain, when idle
        stop = timer.cancel
        refusal: RequestError | None = None
        # A connection accepted as the drain began is served too (its request may be on its
        # way already), once: the drain only closes connections idle when it begins.
        idle.enter(stop)
        try:
            with timer:
                while True:
                    try:
                        event = parser.next_event()
                    except RequestError as exc:
                        refusal = exc
                        break
                    if event is NEED_DATA:
                        data = await self.receive()
                        if not data:
                            return  # the client closed: nothing left to read, none to linger
                        parser.feed(data)
                    elif type(event) is Request:
                        if not idle.leave(stop):
                            break  # the timeout or the drain won the race: nothing started
                        self.read_ahead = 0
                        if not await self.serve(event) or ctx.draining:
                            break
                        idle.enter(stop)
                        self.io.expect_reply()
                    elif type(event) is Upgrade:
                        idle.leave(stop)
                        self.io.close()
                        await self.upgrade(event.head, event.leftover)
                        return
        finally:
            idle.leave(stop)
            self.io.close()
        if refusal is not None:
            await _refuse(self.stream, _refusal(refusal))
        else:
            await _linger(self.stream)

    async def upgrade(self, head: RequestHead, leftover: bytes) -> None:
        from .websocket import serve_websocket

        await serve_websocket(self.stream, head, leftover, self.ctx, self.client, self.server)

    async def serve(self, request: Request) -> bool:
        """Run the app for one request; True if the connection can take another."""
        ctx = self.ctx
        head = request.head
        scope = make_scope("http", head, ctx.settings, ctx.state, self.client, self.server)
        writer = ResponseWriter(head.http_version, head.method == "HEAD", request.keep_alive)
        exchange = _Exchange(self, request, writer, scope["client"])
        try:
            await ctx.app(scope, exchange.receive, exchange.send)
        except ClientDisconnected:
            return False
        except Exception as exc:
            ctx.log(
                f"Exception in ASGI application ({head.method} {_target(head)}):\n"
                + "".join(traceback.format_exception(exc)).rstrip()
            )
            await self.fail(exchange)
            return False
        if not writer.complete:
            if exchange.disconnected:
                return False  # the client left: nothing to finish, no one to tell
            if writer.started:
                ctx.log(f"ASGI app returned before its response to {_target(head)} was complete")
            else:
                ctx.log(f"ASGI app returned without a response to {_target(head)}")
            await self.fail(exchange)
            return False
        if exchange.error is not None or exchange.disconnected:
            return False
        # The app may not have read the body: skip what of it is buffered; if more is on its
        # way, close instead of reading it.
        parser = self.parser
        while not exchange.body_done:
            try:
                event = parser.next_event()
            except RequestError:
                return False
            if event is END:
                exchange.body_done = True
            elif event is NEED_DATA:
                return False
        return writer.keep_alive

    async def fail(self, exchange: _Exchange) -> None:
        """After an app error: a 500 if no byte of the response left yet, else just close."""
        error = exchange.error
        if exchange.writer.head_sent or (exchange.disconnected and error is None):
            return
        if error is not None:
            response, status = _refusal(error), error.status
        else:
            response, status = simple_response(500, b"Internal Server Error\n", close=True), 500
        self.access(exchange.client, exchange.request.head, status)
        try:
            await self.send(response)
        except ClientDisconnected:
            pass

    def access(self, client: Address | None, head: RequestHead, status: int) -> None:
        if self.access_log:
            self.ctx.access(client, head.method, _target(head), head.http_version, status)


def _target(head: RequestHead) -> str:
    return head.target.decode("latin-1")


class _Exchange:
    """One request's receive and send, as the app sees them: kept apart from the connection so
    that a stale callable from an earlier request cannot touch the next one's response."""

    __slots__ = (
        "body_done",
        "client",
        "conn",
        "disconnected",
        "error",
        "expect_continue",
        "request",
        "writer",
    )

    def __init__(
        self,
        conn: _HttpConnection,
        request: Request,
        writer: ResponseWriter,
        client: Address | None,
    ) -> None:
        self.conn = conn
        self.client = client  # as the scope says (a trusted proxy's X-Forwarded-For)
        self.request = request
        self.writer = writer
        self.body_done = False
        self.disconnected = False
        self.expect_continue = request.expect_continue
        self.error: RequestError | None = None  # the body turned out malformed or too large

    async def receive(self) -> dict[str, Any]:
        if self.body_done or self.disconnected:
            return await self._wait_disconnect()
        parser = self.conn.parser
        chunks: list[bytes] = []
        while True:
            try:
                event = parser.next_event()
            except RequestError as exc:
                self.error = exc
                self.disconnected = True
                return _DISCONNECT
            if type(event) is Data:
                chunks.append(event.chunk)
                continue
            if event is END:
                self.body_done = True
                break
            if chunks:  # NEED_DATA: hand over what is here before waiting for more
                break
            if self.expect_continue:
                self.expect_continue = False
                if not self.writer.started:
                    await self.conn.send(CONTINUE)
            data = await self.conn.receive()
            if not data:
                self.disconnected = True
                return _DISCONNECT
            parser.feed(data)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

    async def _wait_disconnect(self) -> dict[str, Any]:
        conn = self.conn
        if not self.disconnected and not self.writer.complete:
            while conn.read_ahead <= MAX_READ_AHEAD:
                data = await conn.receive()
                if not data:
                    self.disconnected = True
                    break
                conn.read_ahead += len(data)
                conn.parser.feed(data)  # the next request's: its events wait in the parser
            else:
                await trio.sleep_forever()  # the app learns of a disconnect when it sends
        return _DISCONNECT

    async def send(self, message: Any) -> None:
        kind = message["type"]
        writer = self.writer
        if kind == "http.response.body":
            if self.disconnected:
                raise ClientDisconnected("the client closed the connection")
            conn = self.conn
            if conn.ctx.draining:
                writer.keep_alive = False
            data = writer.body(message.get("body", b""), message.get("more_body", False))
            if data:
                try:
                    await conn.io.send_all(data)  # (not conn.send: one coroutine less per body)
                except PeerGone as exc:
                    raise ClientDisconnected("the client closed the connection") from exc
            if writer.complete and conn.access_log:
                conn.access(self.client, self.request.head, writer.status)
        elif kind == "http.response.start":
            writer.start(message["status"], message.get("headers", ()))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an HTTP connection")
