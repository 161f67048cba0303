"""The bridge's trio driver, for brokers with a trio client (Redis Streams through coredis): the
I/O around :class:`.logic.BridgeLogic`, after :func:`.runtime.handshake`."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar

import trio

from .. import exitcodes
from ..wire.bridge import encode_appended
from ..wire.framing import FrameReader, encode_frame
from ..wire.protocol import Kind
from .broker import Batch, Broker, BrokerUnavailable, Gap
from .logic import BROKER_CALL_TIMEOUT, HEARTBEAT, READ_BLOCK, RECEIVE_SIZE, BridgeLogic, say
from .redis_stream import RedisStream

T = TypeVar("T")


class HubConnection:
    """The bridge's side of the hub connection: one writer at a time, frames read in order."""

    def __init__(self, stream: trio.SocketStream, reader: FrameReader) -> None:
        self.stream = stream
        self.reader = reader
        self._send_lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def next_frame(self) -> tuple[int, bytes]:
        while (frame := self.reader.next_frame()) is None:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise EOFError("the master closed the hub connection")
            self.reader.append(data)
        return frame.kind, frame.body


# Batches appended in one call at most (each still its own entry), and their bytes: what has
# piled up while the last call was under way goes in the next one, so a busy bridge keeps up.
MAX_BATCHES_PER_CALL = 256
# The two kinds of broker call, each counted as away on its own (BridgeLogic.unavailable).
APPEND = "append"
READ = "read"
MAX_BYTES_PER_CALL = 4 * 1024 * 1024


class Bridge:
    def __init__(
        self, hub: HubConnection, appender: RedisStream, reader: Broker, logic: BridgeLogic
    ) -> None:
        self.hub = hub
        # Two clients, two connections: a read waits on its connection in XREAD BLOCK, and an
        # append queued behind it on the same connection would wait that block out (seen: up
        # to a second of cross-hub latency, the read waiting for the very append it held up).
        self.appender = appender
        self.reader = reader
        self.logic = logic
        # Set while the reader has a position. Appends wait for it: a batch appended before the
        # reader takes the tail (at start, or after a RESET) would land behind it, and the hub's
        # own workers would never be delivered their own broadcasts.
        self._positioned = trio.Event()
        if logic.next_seq is not None:
            self._positioned.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.append_loop)
            nursery.start_soon(self.read_loop)
            nursery.start_soon(self.heartbeat)

    async def heartbeat(self) -> NoReturn:
        frame = encode_frame(Kind.HEARTBEAT)
        while True:
            await self.hub.send(frame)
            await trio.sleep(HEARTBEAT)

    async def append_loop(self) -> NoReturn:
        reader = self.hub.reader
        while True:
            batches = [self.logic.batch(*await self.hub.next_frame())]
            size = len(batches[0].frames)
            while len(batches) < MAX_BATCHES_PER_CALL and size < MAX_BYTES_PER_CALL:
                frame = reader.next_frame()  # what is already here: no waiting
                if frame is None:
                    break
                batches.append(self.logic.batch(frame.kind, frame.body))
                size += len(frame.body)
            await self.retrying(partial(self.append_positioned, batches), APPEND)
            await self.hub.send(encode_appended(batches[-1].number))

    async def append_positioned(self, batches: list[Batch]) -> None:
        # Every try waits for a position: a RESET while the broker refused the last one (the
        # reader still answered) moves the reader to a new tail, which the batches must follow.
        await self._positioned.wait()
        await self.appender.append_many(batches)

    async def read_loop(self) -> NoReturn:
        logic = self.logic
        while True:
            if logic.next_seq is None:
                logic.next_seq = await self.retrying(self.reader.tail, READ)
                self._positioned.set()
            expected = logic.next_seq
            try:
                entries = await self.retrying(partial(self.reader.read, expected, READ_BLOCK), READ)
            except Gap as gap:
                reset = logic.gap(gap)
                say(reset.note)
                await self.send_reset(reset.frame)
                continue
            if frames := logic.deliveries(expected, entries):
                await self.hub.send(frames)

    async def send_reset(self, frame: bytes) -> None:
        """Tell the master to cut its workers off; reading starts again at the tail, and
        appending waits for that position."""
        if self._positioned.is_set():
            self._positioned = trio.Event()
        await self.hub.send(frame)

    async def retrying(self, call: Callable[[], Awaitable[T]], kind: str) -> T:
        """``call()`` until the broker answers (the logic decides the waits and the RESET);
        ``kind`` names the loop calling, whose outage is counted on its own."""
        attempt = 0
        while True:
            started = trio.current_time()
            try:
                result = await call()
            except BrokerUnavailable as exc:
                retry = self.logic.unavailable(exc, attempt, trio.current_time(), started, kind)
                # The master hears why before the log says it: whoever reads the line and asks
                # for `stats` finds the reason there.
                await self.send_status()
                for note in retry.notes:
                    say(note)
                if retry.reset is not None:
                    await self.send_reset(retry.reset)
                await trio.sleep(retry.delay)
                attempt += 1
                continue
            if back := self.logic.available(kind):
                await self.send_status()
                say(back)
            return result

    async def send_status(self) -> None:
        """Tell the master why the broker is away (or that it is back), when that changed."""
        if (status := self.logic.status()) is not None:
            await self.hub.send(status)


async def serve(sock: socket.socket, reader: FrameReader, welcome: dict[str, Any]) -> int:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    hub = HubConnection(stream, reader)
    try:
        url, name = str(welcome["url"]), str(welcome["name"])
        retention = int(welcome["retention"])
        timeout = min(BROKER_CALL_TIMEOUT, float(welcome["timeout"]))
        async with (
            RedisStream(url, name, retention=retention, timeout=timeout) as appender,
            RedisStream(url, name, retention=retention, timeout=timeout) as follower,
        ):
            await hub.send(encode_frame(Kind.READY))
            await Bridge(hub, appender, follower, BridgeLogic(welcome)).run()
    except* trio.BrokenResourceError as group:
        raise EOFError(f"the hub connection broke: {group.exceptions[0]}") from None
    return exitcodes.STOPPED


def run(sock: socket.socket, reader: FrameReader, welcome: dict[str, Any]) -> int:
    return trio.run(serve, sock, reader, welcome)
