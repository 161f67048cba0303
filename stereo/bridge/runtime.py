"""The broker bridge process: the master's BATCHes into the broker, the broker's entries back to
the master as DELIVERs, in the broker's order, with every gap turned into a RESET.

Started by the master (``python -m stereo.bridge``) with its end of a hub connection in
``STEREO_HUB_FD``; everything else arrives in WELCOME. Two loops share the broker: appending
(one entry per batch, acknowledged by APPENDED; retried with backoff while the broker is away)
and reading (from the seq after the last one this hub delivered, or the tail for a new hub).
The broker away longer than the bridge timeout, or a gap in its order, is a RESET: the master
cuts its workers off, and reading starts again at the tail. Its lines go to stderr, prefixed.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar

import trio

from .. import exitcodes
from ..errors import ProtocolError
from ..wire.bridge import decode_batch, encode_appended, encode_deliver
from ..wire.framing import Frame, FrameReader, encode_frame
from ..wire.protocol import (
    LARGEST_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Kind,
    decode_map,
    encode_map,
    max_body_size,
)
from .broker import Batch, BrokerUnavailable, Gap
from .redis_stream import RedisStream
from .restamp import restamp

RECEIVE_SIZE = 256 * 1024
READ_BLOCK = 1.0  # seconds a read waits for entries before looking again
BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
HEARTBEAT = 1.0
T = TypeVar("T")


def say(line: str) -> None:
    print(f"[bridge] {line}", file=sys.stderr, flush=True)


class HubConnection:
    """The bridge's side of the hub connection: one writer at a time, frames read in order."""

    def __init__(self, stream: trio.SocketStream, max_body: int) -> None:
        self.stream = stream
        self.reader = FrameReader(max_body)
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


class Bridge:
    def __init__(self, hub: HubConnection, broker: RedisStream, welcome: dict[str, Any]) -> None:
        self.hub = hub
        self.broker = broker
        self.hub_id = str(welcome["hub_id"])
        self.timeout = float(welcome["timeout"])
        self.next_seq: int | None = welcome.get("next_seq")
        # Each frame of an entry must be a whole BROADCAST under the hub's own limit.
        self.max_length = max_body_size(int(welcome["max_message_size"])) + 1
        self._away_since: float | None = None  # the broker unreachable since (trio clock)
        self._reset_sent = False
        # Set while the read loop has a position. Appends wait for it: a batch appended before
        # the reader takes the tail (at start, or after a RESET) would land behind it, and the
        # hub's own workers, already connected, would never be delivered their own broadcasts.
        self._positioned = trio.Event()
        if self.next_seq is not None:
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
        while True:
            kind, body = await self.hub.next_frame()
            if kind != Kind.BATCH:
                raise ProtocolError(f"the master sent {Kind(kind).name}, not BATCH")
            number, count, frames = decode_batch(body)
            batch = Batch(self.hub_id, number, count, frames)
            await self._positioned.wait()
            await self.retrying(partial(self.broker.append, batch))
            await self.hub.send(encode_appended(number))

    async def read_loop(self) -> NoReturn:
        while True:
            if self.next_seq is None:
                self.next_seq = await self.retrying(self.broker.tail)
                self._positioned.set()
            expected = self.next_seq
            try:
                entries = await self.retrying(partial(self.broker.read, expected, READ_BLOCK))
            except Gap as gap:
                await self.reset(f"the broker's order has a gap: {gap}")
                continue
            if self.next_seq != expected:
                continue  # reset while the broker was away: start again at the tail
            for entry in entries:
                if self.next_seq != entry.first_seq:
                    break  # reset while delivering (the broker away, seen by the append loop)
                frames = restamp(entry.frames, entry.count, entry.first_seq, self.max_length)
                await self.hub.send(encode_deliver(entry.count, entry.first_seq, frames))
                self.next_seq = entry.last_seq + 1
            self._reset_sent = False

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until the broker answers; past the timeout, RESET the hub (once)."""
        attempt = 0
        while True:
            # The broker is away from the start of the first call that failed, not from its
            # failure: a call bounded by the timeout itself (a paused server, a cut link) only
            # fails once the timeout has passed, and the RESET is due then, not a timeout later.
            started = trio.current_time()
            try:
                result = await call()
            except BrokerUnavailable as exc:
                now = trio.current_time()
                if self._away_since is None:
                    self._away_since = started
                    say(f"broker unavailable ({exc}); retrying")
                if now - self._away_since > self.timeout and not self._reset_sent:
                    await self.reset(f"the broker was unreachable for over {self.timeout:g} s")
                await trio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            if self._away_since is not None:
                say("broker reachable again")
                self._away_since = None
            return result

    async def reset(self, reason: str) -> None:
        """Tell the master to cut its workers off; reading starts again at the tail, and
        appending waits for it (see ``_positioned``)."""
        say(f"RESET: {reason}")
        self._reset_sent = True
        self.next_seq = None
        if self._positioned.is_set():
            self._positioned = trio.Event()
        await self.hub.send(encode_map(Kind.RESET, {"reason": reason}))


async def handshake(hub: HubConnection) -> dict[str, Any]:
    """HELLO, then WELCOME; the batches the master sends right behind it stay in the reader."""
    await hub.send(
        encode_map(Kind.HELLO, {"version": PROTOCOL_VERSION, "pid": os.getpid(), "role": "bridge"})
    )
    kind, body = await hub.next_frame()
    if kind != Kind.WELCOME:
        raise ProtocolError("expected a WELCOME frame first")
    welcome = decode_map(Frame(kind, body))
    if welcome.get("role") != "bridge":
        raise ProtocolError("the master did not welcome a bridge")
    return welcome


async def run(hub_fd: int) -> int:
    sock = socket.socket(fileno=hub_fd)
    os.set_inheritable(hub_fd, False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    # Any frame the master sends fits: WELCOME, and a batch (one read of a worker's connection
    # plus a largest broadcast under way); the limit is the master's own, LARGEST_MESSAGE_SIZE.
    hub = HubConnection(stream, LARGEST_MESSAGE_SIZE + 2 * RECEIVE_SIZE)
    welcome = await handshake(hub)
    async with RedisStream(
        str(welcome["url"]),
        str(welcome["name"]),
        retention=int(welcome["retention"]),
        timeout=min(5.0, float(welcome["timeout"])),
    ) as broker:
        await hub.send(encode_frame(Kind.READY))
        await Bridge(hub, broker, welcome).run()
    return exitcodes.STOPPED


def main() -> NoReturn:
    fd_text = os.environ.pop("STEREO_HUB_FD", "")
    if not fd_text.isdigit():
        say("STEREO_HUB_FD is not set; the bridge is started by `stereo run --bridge`")
        raise SystemExit(exitcodes.WORKER_BOOT_ERROR)
    try:
        code = trio.run(run, int(fd_text))
    except (EOFError, OSError, trio.BrokenResourceError) as exc:
        say(f"hub connection lost: {exc}")
        code = exitcodes.HUB_LOST
    except KeyboardInterrupt:
        code = exitcodes.STOPPED
    sys.exit(code)
