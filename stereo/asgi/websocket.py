"""One ASGI WebSocket session (asgiref's specs/www.rst) on a connection the HTTP driver hands
over after reading an upgrade request.

Two tasks per session, none per message: the app's, and the caller's, which reads frames into
an inbox the app's ``receive()`` takes from. Reading apart from the app keeps pings answered and
a close or a drop seen while the app only sends, and lets a ``receive()`` in one of the app's
tasks sit beside a ``send()`` in another. Frames (the app's, and the reader's pongs and closes)
are queued whole in an :class:`~stereo.outbox.Outbox`, written at once or batched. wsproto's
``FrameProtocol`` does framing, masking, UTF-8 checks and permessage-deflate; the session's
state is here.

Back-pressure: the reader stops reading while the app has more than INBOX_BYTES unread
(:mod:`.wsinbox`), so a client cannot make the server buffer much more than that.
"""

from __future__ import annotations

import os
import socket
import traceback
from enum import Enum
from typing import Any, cast

import trio
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from ..errors import ClientDisconnected
from ..outbox import DIRECT_SEND_GAP, Outbox
from .context import ServerContext
from .scope import RequestHead, make_scope
from .types import ASGIMessage
from .wshandshake import Handshake, Rejection, accept_response, check_request, http_response
from .wsinbox import YIELD_EVERY, MessageInbox

#: How long a close waits for the peer's reply; after a drain, how long the app then gets.
CLOSE_TIMEOUT = 5.0
RECEIVE_SIZE = 64 * 1024
#: Unread bytes past which the reader pauses until the app catches up.
INBOX_BYTES = 256 * 1024
#: Queued bytes past which the app's send() waits for the client to read (a batch being
#: written besides: at most twice this is held).
OUTBOX_BYTES = 256 * 1024

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_PING = Opcode.PING
_CLOSE = Opcode.CLOSE
SERVICE_RESTART = 1012
ABNORMAL = int(CloseReason.ABNORMAL_CLOSURE)  # 1006: no close frame (only ever reported)


class _Stage(Enum):  # where the app is in the ASGI flow
    CONNECTING = "connecting"  # neither accepted nor refused yet
    RESPONDING = "responding"  # refusing with its own response (websocket.http.response)
    OPEN = "open"  # accepted
    CLOSED = "closed"  # closed, refused, or its response finished


async def serve_websocket(
    stream: trio.abc.Stream,
    head: RequestHead,
    leftover: bytes,
    ctx: ServerContext,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
) -> None:
    """Run one WebSocket session to its end; the caller closes ``stream`` afterwards."""
    handshake = check_request(head, ctx.settings.ws_max_size)
    if isinstance(handshake, Rejection):
        _access(ctx, client, head, 400)
        try:
            await stream.send_all(handshake.response)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return
    scope = make_scope("websocket", head, ctx.settings, ctx.state, client, server)
    scope["extensions"] = {"websocket.http.response": {}}
    # A second descriptor of the connection, for the outbox's direct (non-blocking) sends.
    trio_socket = getattr(stream, "socket", None)
    plain = None if trio_socket is None else socket.socket(fileno=os.dup(trio_socket.fileno()))
    session = _Session(stream, ctx, scope, head, handshake, leftover, client, plain)
    ctx.drain_hooks.add(session.drain)
    try:
        await session.run()
    finally:
        ctx.drain_hooks.discard(session.drain)
        if plain is not None:
            plain.close()


def _access(
    ctx: ServerContext, client: tuple[str, int] | None, head: RequestHead, status: int
) -> None:
    if ctx.settings.access_log:
        ctx.access(client, head.method, head.target.decode("latin-1"), head.http_version, status)


def _disconnect(code: int, reason: str = "") -> ASGIMessage:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


class _Session:
    def __init__(
        self,
        stream: trio.abc.Stream,
        ctx: ServerContext,
        scope: dict[str, Any],
        head: RequestHead,
        handshake: Handshake,
        leftover: bytes,
        client: tuple[str, int] | None,
        plain: socket.socket | None,
    ) -> None:
        self._stream = stream
        self._ctx = ctx
        self._scope = scope
        self._head = head
        self._handshake = handshake
        self._leftover = leftover
        self._client = client
        self._max_size = ctx.settings.ws_max_size
        self._stage = _Stage.CONNECTING
        self._proto: FrameProtocol | None = None  # once accepted
        self._decided = trio.Event()  # the app accepted, refused, or returned
        # Frames go straight to ``plain`` when nothing is queued, else the writer task sends
        # what was queued meanwhile in one write (a burst of sends costs one system call).
        self._outbox = Outbox(plain, OUTBOX_BYTES, direct_gap=DIRECT_SEND_GAP)
        self._room_turn = trio.Lock()
        self._broken = False
        self._sends = 0
        self._inbox = MessageInbox(INBOX_BYTES)
        self._connect_sent = False
        self._parts: list[Any] = []  # a fragmented message so far
        self._parts_size = 0
        self._close_sent = False
        self._peer_gone = False  # its close frame came, or EOF, or the stream broke
        self._discarding = False  # after a protocol failure: read only to see EOF
        self._draining = ctx.draining
        self._drained = False
        # Around the reading; given a deadline once a close is sent, cancelled if the stream breaks.
        self._closing = trio.CancelScope()
        self._wake: trio.CancelScope | None = None  # around one wait of the reader

    # -- the drain hook (sync: flags and a cancel; the reader does the I/O) --

    def drain(self) -> None:
        self._draining = True
        if self._wake is not None:
            self._wake.cancel()

    # -- the session's task --

    async def run(self) -> None:
        async with trio.open_nursery() as writer:
            writer.start_soon(self._write_loop)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_app)
                await self._decided.wait()
                if self._proto is not None:
                    with self._closing:
                        await self._read()
                    if self._drained:
                        # The app was told (disconnect 1012); past this it is cancelled.
                        nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            # What the app and the reader queued goes out before the caller closes (bounded).
            if not self._broken:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._outbox.wait_flushed()
            writer.cancel_scope.cancel()

    async def _read(self) -> None:
        stream = self._stream
        while not self._peer_gone:
            if self._draining and not self._close_sent:
                self._drained = True
                self._inbox.finish(_disconnect(SERVICE_RESTART), drop_queued=True)
                self._queue_close(SERVICE_RESTART, "service restart")
                continue
            data: bytes | bytearray | None = None
            with trio.CancelScope() as self._wake:
                if self._inbox.full and not self._close_sent:
                    await self._inbox.wait_for_room()
                else:
                    try:
                        data = await stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
            self._wake = None
            if data is None:  # woken: a drain began, or the app made room
                continue
            if not data:  # gone without a close frame: nothing more is sent to it either
                self._peer_gone = True
                self._stop_sending("the client has gone")
                self._inbox.finish(_disconnect(ABNORMAL))
            elif not self._discarding:
                await self._take(data)

    async def _take(self, data: bytes | bytearray) -> None:
        """Handle every frame ``data`` completes, then wake the app once for all of them."""
        assert self._proto is not None
        proto = self._proto
        proto.receive_bytes(data)  # type: ignore[arg-type]  # a bytearray is only appended
        inbox = self._inbox
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is _TEXT or opcode is _BINARY:
                    if self._close_sent:
                        continue  # nobody listens any more
                    payload: Any = frame.payload
                    if not frame.message_finished or self._parts:
                        payload = self._assemble(payload, frame.message_finished)
                        if payload is None:
                            continue
                    size = len(payload)
                    if size > self._max_size or (opcode is _TEXT and self._text_too_big(payload)):
                        # The parser still works: drop the rest, wait for the close reply.
                        self._parts = []
                        self._inbox.finish(_disconnect(1009, "message too big"))
                        self._queue_close(1009, "message too big")
                        continue
                    key = "text" if opcode is _TEXT else "bytes"
                    inbox.put({"type": "websocket.receive", key: payload}, size)
                elif opcode is _PING:
                    if not self._close_sent:
                        self._outbox.send(proto.pong(frame.payload))  # type: ignore[arg-type]
                elif opcode is _CLOSE:
                    code, reason = cast("tuple[int, str]", frame.payload)
                    self._peer_gone = True
                    self._inbox.finish(_disconnect(int(code), reason))
                    self._queue_close(code, "")  # echo its code, unless we closed first
                    return
        except ParseFailed as exc:
            await self._fail(exc.code, str(exc))
        finally:
            inbox.wake()

    def _assemble(self, piece: Any, finished: bool) -> Any:
        """Collect a fragmented message; the whole message once ``finished``, else None (or
        the pieces so far once they are over the limit, for the caller's check)."""
        self._parts.append(piece)
        self._parts_size += len(piece)
        if not finished and self._parts_size <= self._max_size:
            return None
        whole = ("" if isinstance(piece, str) else b"").join(self._parts)
        self._parts = []
        self._parts_size = 0
        return whole

    def _text_too_big(self, text: str) -> bool:
        # len() counts characters; UTF-8 takes up to 4 bytes each, so encode only if it can matter.
        return len(text) * 4 > self._max_size and len(text.encode()) > self._max_size

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7) on a frame wsproto cannot parse: tell the
        app, send the close, half-close, and read on only to see EOF (the parser is spent, and
        closing with unread bytes would reset the connection, losing our close frame)."""
        self._discarding = True
        self._inbox.finish(_disconnect(int(code), reason))
        self._queue_close(code, reason)
        await self._outbox.wait_flushed()  # under the close's deadline; nothing follows it
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            try:
                await self._stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()

    def _lost(self) -> None:
        """The stream broke: nothing more is read or sent (the app's sends raise)."""
        self._peer_gone = self._broken = True
        self._stop_sending("the client has gone")
        self._inbox.finish(_disconnect(ABNORMAL))
        self._outbox.clear()
        self._closing.cancel()

    # -- writing: a frame is encoded and queued in one synchronous step, so frames never
    # interleave, deflate's context follows the wire's order, and no cancellation cuts a frame --

    async def _write_loop(self) -> None:
        try:
            await self._outbox.write_loop(cast("trio.SocketStream", self._stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._lost()  # (a gathered write raises the socket's OSError as it is)

    def _stop_sending(self, why: str) -> None:
        """No frame is queued from now on; the app's sends, waiting for room or later, raise."""
        self._close_sent = True
        self._outbox.close(ClientDisconnected(why))

    def _queue_close(self, code: int, reason: str) -> None:
        """Queue our close frame (once); the peer then has CLOSE_TIMEOUT to answer."""
        if self._close_sent:
            return
        assert self._proto is not None
        self._outbox.send(self._proto.close(code, reason))  # type: ignore[arg-type]
        self._stop_sending("the WebSocket is closed")
        self._closing.deadline = min(self._closing.deadline, trio.current_time() + CLOSE_TIMEOUT)
        self._inbox.release_reader()  # the reader must not wait for room to see the reply

    async def _send_message(self, payload: str | bytes | bytearray) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # the app's send() is a cancel point
        outbox = self._outbox
        size = len(payload) + 10  # a frame's header is at most 10 bytes
        while not outbox.fits(size) and not self._close_sent:  # a client slow to read
            # Outbox wakes only its latest waiter: the app's sending tasks wait one at a time.
            async with self._room_turn:
                if not outbox.fits(size) and not self._close_sent:
                    await outbox.wait_for_room(size)
        if self._close_sent:
            raise ClientDisconnected("the WebSocket is closed")
        assert self._proto is not None
        outbox.send(self._proto.send_data(payload))  # type: ignore[arg-type]
        self._sends += 1
        if not self._sends % YIELD_EVERY:  # a sending loop must not starve the other tasks
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _send_raw(self, data: bytes) -> None:
        """HTTP bytes before the handshake is done (the 101, refusals)."""
        if self._broken:
            raise ClientDisconnected("the client has gone")
        self._outbox.send(data)

    # -- the ASGI callables --

    async def receive(self) -> ASGIMessage:
        if not self._connect_sent:
            self._connect_sent = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        return await self._inbox.get()

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        stage = self._stage
        if stage is _Stage.OPEN:
            if kind == "websocket.send":
                text = message.get("text")
                payload = message.get("bytes") if text is None else text
                if not isinstance(payload, str | bytes | bytearray):
                    raise TypeError("websocket.send needs 'text' (str) or 'bytes' (bytes)")
                return await self._send_message(payload)
            if kind == "websocket.close":
                self._stage = _Stage.CLOSED
                code = message.get("code")
                code = 1000 if code is None else int(code)
                reason = message.get("reason") or ""
                self._inbox.finish(_disconnect(code, reason), drop_queued=True)
                self._queue_close(code, reason)
            else:
                raise RuntimeError(
                    f"Expected 'websocket.send' or 'websocket.close', but got {kind!r}"
                )
        elif stage is _Stage.CONNECTING:
            self._answer_handshake(kind, message)
        elif stage is _Stage.RESPONDING and kind == "websocket.http.response.body":
            more = bool(message.get("more_body", False))
            if not more:
                self._stage = _Stage.CLOSED
            self._send_raw(bytes(message.get("body", b"")))
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r}: the WebSocket is {stage.value}")
        await trio.lowlevel.checkpoint()

    def _answer_handshake(self, kind: str, message: ASGIMessage) -> None:
        if kind == "websocket.accept":
            response = accept_response(
                self._handshake, message.get("subprotocol"), message.get("headers") or ()
            )
            deflate = self._handshake.deflate
            self._proto = FrameProtocol(False, [deflate] if deflate is not None else [])
            if self._leftover:  # frames the client sent right after its request
                self._proto.receive_bytes(self._leftover)
            self._stage = _Stage.OPEN
            self._decided.set()
            _access(self._ctx, self._client, self._head, 101)
            self._send_raw(response)
        elif kind == "websocket.close":
            self._refuse(403, http_response(403, []))
        elif kind == "websocket.http.response.start":
            status = int(message["status"])
            if not 100 <= status <= 599:
                raise RuntimeError(f"websocket.http.response.start: invalid status {status}")
            head = http_response(status, message.get("headers") or (), complete=False)
            self._stage = _Stage.RESPONDING
            self._refuse(status, head)
        else:
            raise RuntimeError(
                "Expected 'websocket.accept', 'websocket.close' or "
                f"'websocket.http.response.start', but got {kind!r}"
            )

    def _refuse(self, status: int, response: bytes) -> None:
        if self._stage is _Stage.CONNECTING:
            self._stage = _Stage.CLOSED
        self._inbox.finish(_disconnect(ABNORMAL))
        self._decided.set()
        _access(self._ctx, self._client, self._head, status)
        self._send_raw(response)

    # -- the app's task --

    async def _run_app(self) -> None:
        try:
            await self._ctx.app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            self._ctx.log(
                f"Exception in ASGI application (WebSocket {self._scope['path']}):\n"
                + traceback.format_exc().rstrip()
            )
            self._end(1011, "internal error")
        else:
            if self._stage is _Stage.CONNECTING:
                self._ctx.log(
                    f"ASGI app returned without accepting or closing the WebSocket "
                    f"{self._scope['path']}"
                )
            self._end(1000, "")
        finally:
            self._decided.set()

    def _end(self, code: int, reason: str) -> None:
        """After the app: finish what it left open (500 before accepting, close after)."""
        stage, self._stage = self._stage, _Stage.CLOSED
        try:
            if stage is _Stage.CONNECTING:
                _access(self._ctx, self._client, self._head, 500)
                body = b"Internal Server Error"
                self._send_raw(http_response(500, [(b"content-type", b"text/plain")], body))
            elif stage is _Stage.OPEN:
                self._queue_close(code, reason)
        except ClientDisconnected:
            pass
