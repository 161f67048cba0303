"""A bridged hub's side of its bridge (docs/scale-out.md): the batches its workers sent that
the broker has not yet taken, and where the broker's order stands.

Batches are numbered here and kept until the bridge says APPENDED: a bridge that dies takes
nothing with it, since its successor is sent every batch still kept, in order (the broker drops
the ones that did land: the append is idempotent per hub and number). The bytes kept are
bounded: past ``limit`` the hub stops reading its workers, whose broadcasts then wait in their
own bounded outboxes. That is the backpressure while the broker is away.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

import trio

from ..outbox import Outbox
from ..snapshot import BridgeStatistics
from ..urls import redact
from ..wire.bridge import encode_batch


class Upstream:
    def __init__(self, limit: int, *, url: str = "", name: str = "") -> None:
        self.limit = limit
        self.url = url
        self.name = name
        self.restarts = 0  # bridge processes started after the first
        #: This hub's id in the broker (its batches' dedup key), new at every master start.
        self.hub_id = uuid.uuid4().hex
        self.outbox: Outbox | None = None  # the connected bridge's
        self.next_number = 1
        self._pending: deque[tuple[int, bytes]] = deque()  # (number, BATCH frame)
        self.pending_bytes = 0
        self._room = trio.Event()
        self._empty = trio.Event()
        self._empty.set()
        #: The global seq after the last one delivered (None: nothing yet, start at the tail).
        self.next_seq: int | None = None
        self.batches_out = 0
        self.entries_in = 0
        self.resets = 0
        self.last_reset: str | None = None
        #: Why the bridge finds the broker away now (its error reply, or why unreachable).
        self.broker_error: str | None = None

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.limit

    def add(self, frames: bytes, count: int) -> None:
        """Keep a run of BROADCAST frames as the next batch, and hand it to the bridge."""
        number = self.next_number
        self.next_number += 1
        frame = encode_batch(number, count, frames)
        self._pending.append((number, frame))
        self.pending_bytes += len(frame)
        if self._empty.is_set():
            self._empty = trio.Event()
        self.batches_out += 1
        if self.outbox is not None:
            self.outbox.put(frame)

    def appended(self, number: int) -> None:
        pending = self._pending
        while pending and pending[0][0] <= number:
            self.pending_bytes -= len(pending.popleft()[1])
        if not self.full:
            self._room.set()
        if not pending:
            self._empty.set()

    def attach(self, outbox: Outbox) -> None:
        """A bridge finished its handshake: it gets every batch kept, in order."""
        self.outbox = outbox
        for _, frame in self._pending:
            outbox.put(frame)

    def detach(self, outbox: Outbox) -> None:
        if self.outbox is outbox:
            self.outbox = None
            self.broker_error = None  # its successor says again if the broker is still away

    def reset(self, reason: str) -> None:
        """The bridge found this hub behind the broker (a gap, or the broker away too long)."""
        self.resets += 1
        self.last_reset = reason
        # The bridge reads on from the tail; one started after this (the bridge restarted) must
        # not resume from the position before the reset.
        self.next_seq = None

    async def wait_appended(self) -> None:
        """Until every batch kept has been appended (a stopping master's last broadcasts)."""
        await self._empty.wait()

    async def wait_for_room(self) -> None:
        while self.full:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def statistics(self) -> BridgeStatistics:
        return BridgeStatistics(
            url=redact(self.url),
            name=self.name,
            connected=self.outbox is not None,
            next_seq=self.next_seq,
            pending_batches=len(self._pending),
            pending_bytes=self.pending_bytes,
            batches_out=self.batches_out,
            entries_in=self.entries_in,
            restarts=self.restarts,
            resets=self.resets,
            last_reset=self.last_reset,
            broker_error=self.broker_error,
        )

    def welcome(self) -> dict[str, Any]:
        """What a new bridge must know of this hub, besides the broker's address."""
        return {"hub_id": self.hub_id, "next_seq": self.next_seq}
