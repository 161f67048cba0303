"""The object an app's ``serve(worker)`` receives: identity, listeners, and broadcast in and out.

Delivery rule (docs/concepts.md): ``worker.messages()`` subscribes the moment it is *called*; the
iterator then yields every broadcast the worker receives from then on, in hub order, its own
included. Broadcasts that arrive while no iterator exists are counted in ``statistics().discarded``
and dropped. An iterator that falls behind stops the worker reading its hub connection, so the
master sees a slow consumer and cuts the worker off rather than letting it miss a message.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import cbor2
import trio

from ..errors import HubClosed
from ..wire.protocol import (
    Kind,
    Message,
    encode_broadcast,
    encode_cbor,
    frame_broadcast,
)
from .listeners import ConnectionTracker, Listener

dumps = cbor2.dumps
_frame = frame_broadcast
_BROADCAST = Kind.BROADCAST.value

_monotonic = time.monotonic
# Broadcasts closer together than this are batched by the writer task instead of written at once.
_DIRECT_SEND_GAP = 50e-6

# Messages one iterator may hold before the worker stops reading the hub (backpressure).
DEFAULT_INBOX_LIMIT = 65536
# Yield to the scheduler at least this often when handing out already-buffered messages.
_CHECKPOINT_EVERY = 256


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    sent: int
    received: int
    discarded: int
    outbox_bytes: int
    open_connections: int


class MessageStream(AsyncIterator[Message]):
    """Iterator returned by :meth:`Worker.messages`; close it (or leave its ``async for``) to
    unsubscribe."""

    def __init__(self, worker: Worker, limit: int) -> None:
        self._worker = worker
        self._queue: deque[Message] = deque()
        self._limit = limit
        self._wakeup = trio.Event()
        self._since_checkpoint = 0
        self._closed = False

    def _push(self, batch: list[Message]) -> None:
        self._queue.extend(batch)
        self._wakeup.set()

    @property
    def full(self) -> bool:
        return len(self._queue) >= self._limit

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        queue = self._queue
        if queue:
            self._since_checkpoint += 1
            if self._since_checkpoint >= _CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                await trio.lowlevel.checkpoint()
            message = queue.popleft()
            if not queue:
                self._worker._room.set()
            return message
        await self._wait_for_messages()
        return queue.popleft()

    async def _wait_for_messages(self) -> None:
        """Block until the queue holds a message; StopAsyncIteration once closed and empty."""
        self._since_checkpoint = 0
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            if self._worker._hub_error is not None:
                raise self._worker._hub_error
            self._wakeup = trio.Event()
            self._worker._room.set()
            await self._wakeup.wait()

    def receive_nowait(self) -> list[Message]:
        """Take every message already queued, without waiting (for batch consumers)."""
        batch = list(self._queue)
        self._queue.clear()
        self._worker._room.set()
        return batch

    async def receive_batch(self) -> list[Message]:
        """Wait for at least one message, then take every message queued, in order.

        For consumers of high message rates: one await per batch instead of one per message.
        Raises StopAsyncIteration once the stream is closed and empty, like ``__anext__``.
        """
        if self._queue:
            await trio.lowlevel.checkpoint()  # every call yields once, as trio calls should
        await self._wait_for_messages()
        return self.receive_nowait()

    def batches(self) -> AsyncIterator[list[Message]]:
        """``async for batch in stream.batches()``: :meth:`receive_batch` until closed."""
        return _Batches(self)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._worker._subscribers.discard(self)
            self._wakeup.set()
            self._worker._room.set()


class _Batches(AsyncIterator[list[Message]]):
    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream

    async def __anext__(self) -> list[Message]:
        return await self._stream.receive_batch()


class Worker:
    """Handed to ``serve(worker)`` in every worker process."""

    def __init__(
        self,
        worker_id: int,
        listeners: list[Listener],
        tracker: ConnectionTracker,
        max_message_size: int,
        outbox_limit: int,
        inbox_limit: int = DEFAULT_INBOX_LIMIT,
    ) -> None:
        self.id = worker_id
        self.listeners = listeners
        self.max_message_size = max_message_size
        #: Set when the master asked this worker to stop (graceful drain has begun).
        self.stopping = trio.Event()
        self._tracker = tracker
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._outbox_limit = outbox_limit
        self._inbox_limit = inbox_limit
        self._outbox_ready = trio.Event()
        self._outbox_room = trio.Event()
        self._writing = False
        self._flushed = trio.Event()
        # The hub connection's plain socket, for direct writes (None in tests without a hub).
        self._hub_sock: socket.socket | None = None
        self._last_direct = 0.0
        self._subscribers: set[MessageStream] = set()
        # Set whenever an iterator drains, so the hub reader can resume after backpressure.
        self._room = trio.Event()
        self._hub_error: HubClosed | None = None
        self._since_checkpoint = 0
        self._sent = 0
        self._received = 0
        self._discarded = 0

    # -- sending -----------------------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        try:
            payload = dumps(value)
        except Exception:
            payload = encode_cbor(value)  # raises EncodeError with the reason
        if len(payload) > self.max_message_size:
            encode_broadcast(payload, self.max_message_size)  # raises MessageTooLarge
        return _frame(payload, _BROADCAST)

    def broadcast_nowait(self, value: Any) -> None:
        """Queue ``value`` for every worker; raise :class:`trio.WouldBlock` if the outbox is full.

        Raises MessageTooLarge or EncodeError (and sends nothing) for a value that cannot go out.
        """
        frame = self._encode(value)
        self._check_open()
        if not self._fits(len(frame)):
            raise trio.WouldBlock
        self._enqueue(frame)

    async def broadcast(self, value: Any) -> None:
        """Send ``value`` to every worker (this one included), waiting while the outbox is full.

        Yields to the scheduler every few calls rather than every call, so a burst of broadcasts
        leaves in one write instead of one system call each.
        """
        frame = self._encode(value)
        pending = self._outbox_bytes
        # _fits() inlined: this runs once per broadcast.
        if self._hub_error is not None or (pending and pending + len(frame) > self._outbox_limit):
            await self._wait_for_room(len(frame))
        self._enqueue(frame)
        count = self._since_checkpoint + 1
        if count < _CHECKPOINT_EVERY:
            self._since_checkpoint = count
        else:
            self._since_checkpoint = 0
            await trio.lowlevel.checkpoint()

    async def _wait_for_room(self, size: int) -> None:
        """Raise HubClosed, or wait until a frame of ``size`` bytes fits in the outbox."""
        while True:
            self._check_open()
            if self._fits(size):
                return
            self._since_checkpoint = 0
            self._outbox_room = trio.Event()
            await self._outbox_room.wait()

    def _fits(self, size: int) -> bool:
        """A frame of ``size`` bytes may be queued (an empty outbox takes any frame)."""
        return not self._outbox_bytes or self._outbox_bytes + size <= self._outbox_limit

    def _check_open(self) -> None:
        if self._hub_error is not None:
            raise self._hub_error

    def _enqueue(self, frame: bytes) -> None:
        self._sent += 1
        outbox = self._outbox
        if outbox:  # a burst: the writer task is already woken and will take this too
            outbox.append(frame)
            self._outbox_bytes += len(frame)
            return
        if not self._writing and self._hub_sock is not None:
            # A lone broadcast goes straight to the socket (saves a task switch of latency);
            # in a burst only the first does, and the rest leave in one write from the writer.
            now = _monotonic()
            if now - self._last_direct > _DIRECT_SEND_GAP:
                self._last_direct = now
                try:
                    sent = self._hub_sock.send(frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent = 0  # the writer meets the same error and reports it
                if sent == len(frame):
                    return
                frame = frame[sent:]
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._outbox_ready.set()

    def _send_raw(self, frame: bytes) -> None:
        """Queue a control frame (heartbeat, ready) regardless of the outbox bound."""
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._outbox_ready.set()

    async def _wait_flushed(self) -> None:
        """Wait until everything queued so far has been handed to the kernel."""
        while self._outbox or self._writing:
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    def _take_outbox(self) -> list[bytes]:
        frames, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        self._outbox_ready = trio.Event()
        self._outbox_room.set()
        return frames

    # -- receiving ---------------------------------------------------------------------------

    def messages(self, *, limit: int | None = None) -> MessageStream:
        """Subscribe now; iterate to receive every later broadcast in order."""
        self._check_open()
        stream = MessageStream(self, limit or self._inbox_limit)
        self._subscribers.add(stream)
        return stream

    def _deliver(self, batch: list[Message]) -> None:
        self._received += len(batch)
        if not self._subscribers:
            self._discarded += len(batch)
            return
        for stream in self._subscribers:
            stream._push(batch)

    def _inbox_full(self) -> bool:
        return any(stream.full for stream in self._subscribers)

    def _fail(self, error: HubClosed) -> None:
        self._hub_error = error
        for stream in self._subscribers:
            stream._wakeup.set()
        self._outbox_room.set()

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            sent=self._sent,
            received=self._received,
            discarded=self._discarded,
            outbox_bytes=self._outbox_bytes,
            open_connections=self._tracker.open,
        )
