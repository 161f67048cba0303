"""A small HTTP/1.1 server for the exporter and the dashboard: h11 on trio, one handler.

Not the worker's ASGI front end (that one is tuned for apps under load and lives in a worker);
this serves a few requests a second to Prometheus and a browser. A handler returns a
:class:`Response`, or a :class:`Stream` whose chunks are sent as they come (server-sent
events); a stream ends the connection when it ends.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from .address import split_host_port

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 60.0
RECEIVE_SIZE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    peer: str


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Stream:
    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response | Stream]]


class BadRequest(Exception):
    pass


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return "unix"


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _read_request(conn: h11.Connection, stream: trio.SocketStream, peer: str) -> Request:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            with trio.fail_after(IDLE_TIMEOUT):
                data = await stream.receive_some(RECEIVE_SIZE)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise BadRequest("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise EOFError
    split = urlsplit(head.target.decode("ascii", "replace"))
    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
    return Request(head.method.decode(), split.path, query, headers, bytes(body), peer)


async def _respond(
    conn: h11.Connection, stream: trio.SocketStream, reply: Response | Stream
) -> None:
    headers = [("content-type", reply.content_type), ("cache-control", "no-store"), *reply.headers]
    if isinstance(reply, Response):
        headers.append(("content-length", str(len(reply.body))))
        status = h11.Response(
            status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase
        )
        await _send(conn, stream, status)
        await _send(conn, stream, h11.Data(data=reply.body))
        await _send(conn, stream, h11.EndOfMessage())
        return
    headers.append(("connection", "close"))
    await _send(conn, stream, h11.Response(status_code=200, headers=headers, reason=b"OK"))
    async for chunk in reply.chunks:
        await _send(conn, stream, h11.Data(data=chunk))
    await _send(conn, stream, h11.EndOfMessage())


async def _serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
    peer = _peer_name(stream)
    try:
        while True:
            try:
                request = await _read_request(conn, stream, peer)
            except (h11.RemoteProtocolError, BadRequest) as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _respond(conn, stream, Response(400, f"bad request: {exc}\n".encode()))
                return
            try:
                reply = await handler(request)
            except Exception as exc:  # a bug of ours costs this request, not the server
                traceback.print_exception(exc)
                reply = Response(500, b"internal error\n")
            await _respond(conn, stream, reply)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (EOFError, trio.TooSlowError, trio.BrokenResourceError, h11.LocalProtocolError):
        return
    finally:
        await stream.aclose()


def open_listeners(address: str) -> list[trio.SocketListener]:
    """Listeners for HOST:PORT, [V6]:PORT or unix:PATH (a unix socket is made owner-only).
    Raises OSError (address in use...) or ValueError (a malformed address)."""
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError("unix: needs a path")
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
        return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]


def bound_address(listener: trio.SocketListener) -> str:
    """Where a listener ended up (the real port after :0), as HOST:PORT or unix:PATH."""
    name = listener.socket.getsockname()
    if isinstance(name, str):
        return f"unix:{name}"
    host = f"[{name[0]}]" if ":" in name[0] else name[0]
    return f"{host}:{name[1]}"


async def serve(listeners: list[trio.SocketListener], handler: Handler) -> None:
    await trio.serve_listeners(
        lambda stream: _serve_connection(stream, handler),  # type: ignore[arg-type]
        listeners,
    )
