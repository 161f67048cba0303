"""The messages a WebSocket session has read and its app has not taken yet.

The session's reader puts a whole batch (every message one ``receive_some`` completed), then
wakes the app once. ``get()`` takes one message at a time without a scheduler round-trip while
some are queued (it yields every YIELD_EVERY), then returns the final message (the disconnect)
to every later call. Past ``limit`` unread bytes the reader waits for room, so a client that
sends faster than the app reads fills TCP's buffers, not the worker's memory.
"""

from __future__ import annotations

from collections import deque

import trio

from .types import ASGIMessage

#: get() checkpoints only if cancelled while messages are queued, and yields every Nth time.
YIELD_EVERY = 64


class MessageInbox:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: deque[tuple[ASGIMessage, int]] = deque()
        self._bytes = 0
        self._final: ASGIMessage | None = None
        self._taken = 0
        self._arrival = trio.lowlevel.ParkingLot()  # get() waits here
        self._room = trio.lowlevel.ParkingLot()  # the reader waits here while full

    @property
    def full(self) -> bool:
        return self._bytes >= self._limit

    def put(self, message: ASGIMessage, size: int) -> None:
        """Queue one message (``size``: its payload's length); call wake() after the batch."""
        self._queue.append((message, size))
        self._bytes += size

    def wake(self) -> None:
        if self._arrival and (self._queue or self._final is not None):
            self._arrival.unpark_all()

    def finish(self, message: ASGIMessage, *, drop_queued: bool = False) -> None:
        """Set what get() returns once the queue is empty (the first call counts);
        ``drop_queued``: return it next instead."""
        if drop_queued:
            self._queue.clear()
            self._bytes = 0
            self.release_reader()
        if self._final is None:
            self._final = message
            self.wake()

    async def wait_for_room(self) -> None:
        """The reader's wait while full (returns early on release_reader)."""
        await self._room.park()

    def release_reader(self) -> None:
        self._room.unpark_all()

    async def get(self) -> ASGIMessage:
        queue = self._queue
        while True:
            if queue:
                self._taken += 1
                if self._taken % YIELD_EVERY:
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    await trio.lowlevel.checkpoint()
                if not queue:  # emptied meanwhile (a drain)
                    continue
                message, size = queue.popleft()
                self._bytes -= size
                if self._room and self._bytes < self._limit:
                    self._room.unpark_all()
                return message
            if self._final is not None:
                await trio.lowlevel.checkpoint()
                return self._final
            await self._arrival.park()
