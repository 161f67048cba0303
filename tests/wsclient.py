"""A small WebSocket client for tests: plain trio and wsproto, over any trio stream.

``await WSClient.open(stream, path)`` does the opening handshake (``Refused`` if the server
answers with an HTTP status instead of 101); ``connect(host, port, path)`` opens a TCP
connection first. Then ``send_text``/``send_bytes``/``send_raw``, ``receive()`` (a whole message;
``Closed`` once the server's close frame or EOF came), ``ping()`` (returns on the pong) and
``close()`` (returns the server's close code and reason). Pings from the server are answered
and its close is echoed, as a browser does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate


class Refused(Exception):
    """The server answered the handshake with an HTTP response."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"handshake refused: {status}")
        self.status = status
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body


class Closed(Exception):
    """The connection is closed: the server's close code and reason (code None on EOF)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class WSClient:
    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, accept: AcceptConnection):
        self.stream = stream
        self.ws = ws
        self.subprotocol = accept.subprotocol
        self.extensions = accept.extensions
        self.accept_headers = {name.lower(): value for name, value in accept.extra_headers}
        self.closed: Closed | None = None
        self._events: deque[Event] = deque()
        self._parts: list[str | bytes] = []
        self._kept: deque[str | bytes] = deque()  # messages that came while waiting for a pong
        self._pongs = 0

    @classmethod
    async def open(
        cls,
        stream: trio.abc.Stream,
        path: str = "/",
        *,
        host: str = "localhost",
        subprotocols: Sequence[str] = (),
        deflate: bool = False,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
        trailing: bytes = b"",
    ) -> WSClient:
        """Handshake on ``stream``; ``trailing`` goes out in the same write as the request."""
        ws = WSConnection(ConnectionType.CLIENT)
        extensions: list[Extension] = [PerMessageDeflate()] if deflate else []
        request = Request(
            host=host,
            target=path,
            subprotocols=list(subprotocols),
            extensions=extensions,
            extra_headers=list(extra_headers),
        )
        await stream.send_all(ws.send(request) + trailing)
        refused: RejectConnection | None = None
        body = b""
        while True:
            data = await stream.receive_some()
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    client = cls(stream, ws, event)
                    client._events.extend(ws.events())  # frames in the same read
                    return client
                if isinstance(event, RejectConnection):
                    refused = event
                    if not event.has_body:
                        raise Refused(event.status_code, list(event.headers), b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        assert refused is not None
                        raise Refused(refused.status_code, list(refused.headers), body)
                elif isinstance(event, CloseConnection):  # EOF before a whole response
                    if refused is not None:
                        raise Refused(refused.status_code, list(refused.headers), body)
                    raise Closed(None, "EOF during the handshake")

    # -- sending --

    async def send_text(self, text: str, *, fragments: Sequence[str] = ()) -> None:
        await self.send_raw(self._frames(text, fragments))

    async def send_bytes(self, data: bytes, *, fragments: Sequence[bytes] = ()) -> None:
        await self.send_raw(self._frames(data, fragments))

    def _frames(self, data: str | bytes, fragments: Sequence[str | bytes]) -> bytes:
        """The message as frames: ``fragments`` (then ``data``) when given, else one frame."""
        pieces = [*fragments, data] if fragments else [data]
        out = b""
        for i, piece in enumerate(pieces):
            out += self.ws.send(Message(data=piece, message_finished=i == len(pieces) - 1))
        return out

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def ping(self, payload: bytes = b"p") -> None:
        """Ping, and return once the pong came (messages that came first are kept)."""
        await self.send_raw(self.ws.send(Ping(payload=payload)))
        seen = self._pongs
        while self._pongs == seen:
            await self._next(keep_messages=True)

    async def close(self, code: int = 1000, reason: str = "") -> tuple[int | None, str]:
        """Send a close and return the server's answer (code None if it only closed TCP)."""
        if self.ws.state is ConnectionState.OPEN:
            await self.send_raw(self.ws.send(CloseConnection(code=code, reason=reason)))
        return await self.wait_closed()

    async def wait_closed(self) -> tuple[int | None, str]:
        """Read (dropping messages) until the server's close frame or EOF."""
        while self.closed is None:
            await self._next(keep_messages=False)
        return self.closed.code, self.closed.reason

    async def wait_eof(self) -> None:
        """After the close handshake: read until the server closes TCP (as browsers wait)."""
        while await self.stream.receive_some():
            pass

    # -- receiving --

    async def receive(self) -> str | bytes:
        """The next whole message; Closed once the server closed."""
        if self._kept:
            return self._kept.popleft()
        while True:
            message = await self._next(keep_messages=False)
            if message is not None:
                return message

    async def _next(self, *, keep_messages: bool) -> str | bytes | None:
        """Handle one event; a whole message is returned (or kept when ``keep_messages``)."""
        while not self._events:
            if self.closed is not None:
                raise self.closed
            data = await self.stream.receive_some()
            if not data:
                self.closed = Closed(None, "EOF")
                raise self.closed
            if self.ws.state is not ConnectionState.CLOSED:
                self.ws.receive_data(data)
                self._events.extend(self.ws.events())
        event = self._events.popleft()
        if isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            parts, self._parts = self._parts, []
            whole: str | bytes
            if isinstance(event, TextMessage):
                whole = "".join(part for part in parts if isinstance(part, str))
            else:
                whole = b"".join(part for part in parts if isinstance(part, bytes))
            if keep_messages:
                self._kept.append(whole)
                return None
            return whole
        if isinstance(event, Ping):
            await self.send_raw(self.ws.send(event.response()))
        elif isinstance(event, Pong):
            self._pongs += 1
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.send_raw(self.ws.send(event.response()))
            self.closed = Closed(event.code, event.reason)
        return None


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    path: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    deflate: bool = False,
) -> AsyncIterator[WSClient]:
    """A client over a new TCP connection (closed on exit)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield await WSClient.open(
            stream, path, host=f"{host}:{port}", subprotocols=subprotocols, deflate=deflate
        )
