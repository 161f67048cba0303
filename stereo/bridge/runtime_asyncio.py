"""The bridge's asyncio driver, for brokers whose client is asyncio only (NATS JetStream through
nats-py; the rule: a broker-bridge process may host an asyncio client where no trio one exists,
and never through trio-asyncio). The I/O around :class:`.logic.BridgeLogic`, after
:func:`.runtime.handshake`; the twin of :mod:`.runtime_trio`, loop for loop, but that the
master's batches are received by a loop of their own, so that everything that came in while an
append was under way goes out in the next one (the trio driver takes only what one read of the
hub connection holds). No trio here."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar

from .. import exitcodes
from ..wire.bridge import encode_appended
from ..wire.framing import FrameReader, encode_frame
from ..wire.protocol import Kind
from .broker import Batch, BrokerUnavailable, Gap
from .jetstream import JetStream
from .logic import BROKER_CALL_TIMEOUT, HEARTBEAT, READ_BLOCK, RECEIVE_SIZE, BridgeLogic, say

T = TypeVar("T")
# Batches that piled up while an append was under way go out as one message, up to this many
# bytes (JetStream's default max_payload is 1 MiB; a larger single batch still goes alone).
MERGE_BYTES = 512 * 1024


class HubConnection:
    """The bridge's side of the hub connection: one writer at a time, frames read in order."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: FrameReader
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = frames
        # write() alone never interleaves, but waiting for the buffer to drain is per writer.
        self._send_lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            self.writer.write(data)
            await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        while (frame := self.frames.next_frame()) is None:
            data = await self.reader.read(RECEIVE_SIZE)
            if not data:
                raise EOFError("the master closed the hub connection")
            self.frames.append(data)
        return frame.kind, frame.body


class Bridge:
    def __init__(self, hub: HubConnection, broker: JetStream, logic: BridgeLogic) -> None:
        self.hub = hub
        self.broker = broker
        self.logic = logic
        # Set while the reader has a position; appends wait for it (as in the trio driver).
        self._positioned = asyncio.Event()
        if logic.next_seq is not None:
            self._positioned.set()
        # The master's batches, in order, not yet appended; set while there are some.
        self._waiting: list[Batch] = []
        self._queued = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.receive_loop())
            tasks.create_task(self.append_loop())
            tasks.create_task(self.read_loop())
            tasks.create_task(self.heartbeat())

    async def heartbeat(self) -> NoReturn:
        frame = encode_frame(Kind.HEARTBEAT)
        while True:
            await self.hub.send(frame)
            await asyncio.sleep(HEARTBEAT)

    async def receive_loop(self) -> NoReturn:
        """The master's batches, queued for the append loop (the master's outbox bounds them:
        it sends no more than it keeps until APPENDED)."""
        while True:
            # Not ``self._waiting.append(await ...)``: _take replaces the list meanwhile.
            batch = self.logic.batch(*await self.hub.next_frame())
            self._waiting.append(batch)
            self._queued.set()

    async def append_loop(self) -> NoReturn:
        """What piled up during the last append, as one message: one round trip (and at most
        one lost race with another hub) for all of it, so the appends keep up with the hub."""
        while True:
            await self._queued.wait()
            await self._positioned.wait()
            batches = self._take()
            await self.retrying(partial(self.broker.append_many, batches))
            await self.hub.send(encode_appended(batches[-1].number))

    def _take(self) -> list[Batch]:
        taken, size = 0, 0
        for batch in self._waiting:
            if taken and size + len(batch.frames) > MERGE_BYTES:
                break
            taken += 1
            size += len(batch.frames)
        batches, self._waiting = self._waiting[:taken], self._waiting[taken:]
        if not self._waiting:
            self._queued.clear()
        return batches

    async def read_loop(self) -> NoReturn:
        logic = self.logic
        while True:
            if logic.next_seq is None:
                logic.next_seq = await self.retrying(self.broker.tail)
                self._positioned.set()
            expected = logic.next_seq
            try:
                entries = await self.retrying(partial(self.broker.read, expected, READ_BLOCK))
            except Gap as gap:
                reset = logic.gap(gap)
                say(reset.note)
                await self.send_reset(reset.frame)
                continue
            if frames := logic.deliveries(expected, entries):
                await self.hub.send(frames)

    async def send_reset(self, frame: bytes) -> None:
        """Tell the master to cut its workers off; appending waits for the new position."""
        self._positioned.clear()
        await self.hub.send(frame)

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until the broker answers (the logic decides the waits and the RESET)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = loop.time()
            try:
                result = await call()
            except BrokerUnavailable as exc:
                retry = self.logic.unavailable(exc, attempt, loop.time(), started)
                for note in retry.notes:
                    say(note)
                if retry.reset is not None:
                    await self.send_reset(retry.reset)
                await asyncio.sleep(retry.delay)
                attempt += 1
                continue
            if back := self.logic.available():
                say(back)
            return result


async def serve(sock: socket.socket, frames: FrameReader, welcome: dict[str, Any]) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hub = HubConnection(reader, writer, frames)
    broker = JetStream(
        str(welcome["url"]),
        str(welcome["name"]),
        retention=int(welcome["retention"]),
        timeout=min(BROKER_CALL_TIMEOUT, float(welcome["timeout"])),
    )
    try:
        await hub.send(encode_frame(Kind.READY))
        await Bridge(hub, broker, BridgeLogic(welcome)).run()
    finally:
        await broker.aclose()
        writer.close()
    return exitcodes.STOPPED


def run(sock: socket.socket, frames: FrameReader, welcome: dict[str, Any]) -> int:
    return asyncio.run(serve(sock, frames, welcome))
