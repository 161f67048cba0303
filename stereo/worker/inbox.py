"""Broadcasts coming in to a worker: the :class:`Inbox` the hub intake delivers to, and the
:class:`MessageStream` iterators it fills.

Delivery rule (docs/concepts.md): an iterator receives every broadcast delivered from its
subscription on, in hub order; broadcasts delivered while no iterator exists are counted as
discarded and dropped. A full iterator holds back the hub intake (:meth:`Inbox.wait_for_room`),
so the master sees a slow consumer and cuts the worker off rather than letting it miss a message.

An iterator is full when it holds ``limit`` messages or ``max_bytes`` bytes (as they came over the
wire). Every iterator holds the same message objects, a suffix of what was delivered, so the
longest one bounds the worker's memory: ``max_bytes`` plus the batch that passed it. Bytes are
counted per batch, the unit the hub reader delivers, not per message: the message path stays
as it was, and a batch stops counting once its last message is taken.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import trio

from ..errors import HubClosed
from ..wire import protocol
from ..wire.protocol import DEFAULT_INBOX_LIMIT, Message

# Messages one iterator may hold before the worker stops reading the hub (backpressure); the
# bytes it may hold come from WELCOME (--inbox-limit).
DEFAULT_MESSAGE_LIMIT = 65536
# Yield to the scheduler at least this often when handing out already-buffered messages.
CHECKPOINT_EVERY = 256
# An awaitable that completes at once with its value, without a coroutine (the C accelerator's;
# None without it): how an iterator hands out a message already queued.
ready: Callable[[Message], Awaitable[Message]] | None = getattr(protocol._speedups, "ready", None)


class Subscriber(Protocol):
    """What the inbox delivers to: a :class:`MessageStream`, or a topic subscription."""

    _wakeup: trio.Event

    @property
    def full(self) -> bool: ...

    @property
    def backlog(self) -> bool:
        """Does it hold messages its consumer has not taken yet?"""
        ...

    def _push(self, batch: list[Message], size: int) -> None: ...


class HubReader(Protocol):
    """How a waiting iterator reads the hub itself: :class:`stereo.worker.intake.Intake`."""

    def can_read(self) -> bool: ...

    def pump(self) -> bool: ...

    async def lead(self) -> None: ...


class Inbox:
    """The worker's subscribers, and what the runtime drives: delivery, backpressure, the end."""

    def __init__(
        self, limit: int = DEFAULT_MESSAGE_LIMIT, *, max_bytes: int = DEFAULT_INBOX_LIMIT
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.streams: set[Subscriber] = set()
        # Set whenever an iterator drains, so the hub reader can resume after backpressure.
        self.room = trio.Event()
        #: Why the hub connection ended; iterators and new subscriptions raise it.
        self.error: HubClosed | None = None
        self.received = 0
        self.discarded = 0
        #: The hub socket's reader, through which a waiting iterator reads for itself (None
        #: without a hub: only :meth:`deliver` fills the iterators).
        self.intake: HubReader | None = None

    def subscribe(self, limit: int | None = None) -> MessageStream:
        if self.error is not None:
            raise self.error
        stream = MessageStream(self, limit or self.limit, self.max_bytes)
        self.streams.add(stream)
        return stream

    def deliver(self, batch: list[Message], size: int) -> None:
        """Hand ``batch`` (``size`` bytes on the wire) to every iterator."""
        self.received += len(batch)
        if not self.streams:
            self.discarded += len(batch)
            return
        for stream in self.streams:
            stream._push(batch, size)

    def full(self) -> bool:
        return any(stream.full for stream in self.streams)

    def backlogged(self) -> bool:
        """Does an iterator still hold messages (its consumer is behind or busy)?"""
        return any(stream.backlog for stream in self.streams)

    async def wait_for_room(self) -> None:
        """Return once no iterator is full (without a checkpoint if none is)."""
        while self.full():
            self.room = trio.Event()
            await self.room.wait()

    def close(self, error: HubClosed) -> None:
        """The hub connection is gone: iterators raise ``error`` once they are read empty."""
        self.error = error
        for stream in self.streams:
            stream._wakeup.set()


class MessageStream(AsyncIterator[Message]):
    """Iterator returned by :meth:`Worker.messages`; close it to unsubscribe.

    ``__anext__`` yields to the scheduler once every :data:`CHECKPOINT_EVERY` messages it hands
    out without waiting (already queued, or read from the hub socket there and then), and
    whenever it waits; cancelled, it has taken nothing.
    """

    def __init__(self, inbox: Inbox, limit: int, max_bytes: int) -> None:
        self._inbox = inbox
        self._queue: deque[Message] = deque()
        self._limit = limit
        self._max_bytes = max_bytes
        # Bytes of the batches not yet taken entirely (what the queue holds, counted per batch),
        # and for each such batch: the pushed count at its end, and its size.
        self._bytes = 0
        self._batches: deque[tuple[int, int]] = deque()
        self._pushed = 0
        self._wakeup = trio.Event()
        self._since_checkpoint = 0
        self._closed = False

    def _push(self, batch: list[Message], size: int) -> None:
        self._queue.extend(batch)
        self._pushed += len(batch)
        self._batches.append((self._pushed, size))
        self._bytes += size
        self._wakeup.set()

    @property
    def backlog(self) -> bool:
        return bool(self._queue)

    @property
    def full(self) -> bool:
        if len(self._queue) >= self._limit:
            return True
        if self._bytes < self._max_bytes:
            return False
        # Over the bytes: forget the batches taken entirely since, then judge again.
        taken = self._pushed - len(self._queue)
        batches = self._batches
        while batches and batches[0][0] <= taken:
            self._bytes -= batches.popleft()[1]
        return self._bytes >= self._max_bytes

    def __aiter__(self) -> MessageStream:
        return self

    def __anext__(self) -> Awaitable[Message]:
        queue = self._queue
        if queue and ready is not None:
            # Already queued: the message is taken now, not when awaited (``async for`` awaits
            # at once), and handed back without a coroutine, the largest cost per message.
            count = self._since_checkpoint + 1
            if count < CHECKPOINT_EVERY:
                self._since_checkpoint = count
                message = queue.popleft()
                if not queue:
                    self._inbox.room.set()
                return ready(message)
        return self._next()

    async def _next(self) -> Message:
        queue = self._queue
        if queue or await self._wait_for_messages():
            # Buffered, or read from the socket without waiting: no checkpoint but every
            # CHECKPOINT_EVERY messages (waiting for the socket is one).
            count = self._since_checkpoint + 1
            if count < CHECKPOINT_EVERY:
                self._since_checkpoint = count
            else:
                self._since_checkpoint = 0
                await trio.lowlevel.checkpoint()
            message = queue.popleft()
            if not queue:
                self._inbox.room.set()
            return message
        return queue.popleft()

    async def _wait_for_messages(self) -> bool:
        """Block until the queue holds a message; StopAsyncIteration once closed and empty.

        Reads the hub socket itself when it can (:mod:`stereo.worker.intake`): what is there
        already comes without a checkpoint (True: the caller's count goes on), otherwise this
        task waits on the socket rather than for the reader task to wake it. Returns False if it
        yielded to the scheduler.
        """
        queue = self._queue
        inbox = self._inbox
        intake = inbox.intake
        if (
            intake is not None
            and not self._closed
            and intake.can_read()
            and intake.pump()
            and queue
        ):
            return True
        self._since_checkpoint = 0
        while not queue:
            if self._closed:
                raise StopAsyncIteration
            if inbox.error is not None:
                raise inbox.error
            inbox.room.set()
            if intake is not None and intake.can_read():
                await intake.lead()
            else:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
        return False

    def receive_nowait(self) -> list[Message]:
        """Take every message already queued, without waiting (for batch consumers)."""
        batch = list(self._queue)
        self._queue.clear()
        self._batches.clear()
        self._bytes = 0
        self._inbox.room.set()
        return batch

    async def receive_batch(self) -> list[Message]:
        """Wait for at least one message, then take every message queued, in order.

        For consumers of high message rates: one await per batch instead of one per message.
        Raises StopAsyncIteration once the stream is closed and empty, like ``__anext__``.
        """
        if self._queue or await self._wait_for_messages():
            await trio.lowlevel.checkpoint()  # every call yields once, as trio calls should
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
            self._inbox.streams.discard(self)
            self._wakeup.set()
            self._inbox.room.set()


if ready is None:
    # Without the accelerator, a coroutine is the cheapest awaitable: no call in front of it.
    MessageStream.__anext__ = MessageStream._next  # type: ignore[method-assign]


class _Batches(AsyncIterator[list[Message]]):
    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream

    async def __anext__(self) -> list[Message]:
        return await self._stream.receive_batch()
