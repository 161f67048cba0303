"""The C data plane against the Python one: the same random scenario through a Hub on each.

Hypothesis draws the peers (readers, which also send; slow ones, which never read, with small
socket buffers and a small outbox limit), each reader's frames (broadcasts, heartbeats, DIRECT
frames to a reader or to nobody, and at most one bad frame, its last), how its bytes are cut into
writes (partial frames across writes), how the writes of different peers interleave, and which
readers die on the way. Both hubs run it step by step; after each step the harness waits, bounded,
until every live reader holds the bytes a small model of the relay says it must (which frames are
complete, who receives them), and until every peer the step ended has ended. Then the readers'
byte streams must be identical, and so must every peer's cut-off reason (a slow consumer's byte
count aside: how much the kernel took before the outbox filled depends on write sizes, which differ)
and the bytes dropped at an end inside a frame. A slow peer's stream must be a prefix of the
broadcasts every reader got, on both planes.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stereo.master import cplane
from stereo.master.hub import Hub, Peer
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import Kind, encode_broadcast, encode_map

pytestmark = pytest.mark.skipif(not cplane.available(), reason="the C relay is not built")

LIMIT = 512  # max message size
MAX_LENGTH = LIMIT + 12 + 1
SLOW_LIMIT = 8192  # a slow peer's outbox limit (readers get a big one)
NOBODY = 999


class Events:
    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id

    def welcome(self) -> dict[str, Any]:
        return {"version": 1, "slot": self.worker_id, "max_message_size": LIMIT}

    def ready(self) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def boot_error(self, reason: str) -> None:
        pass


@dataclass
class Wire:
    """One frame a reader sends: its bytes and what the relay does with it."""

    data: bytes
    what: str  # "broadcast", "direct", "control" or "bad"
    target: int = 0
    detect: int = 0  # bad: bytes of it after which the relay refuses it


def bad_frames() -> st.SearchStrategy[Wire]:
    return st.sampled_from(
        [
            Wire(b"\0\0\0\0\x05", "bad", detect=4),  # length 0: refused once its prefix is in
            Wire((MAX_LENGTH + 1).to_bytes(4, "big") + b"\x05", "bad", detect=4),
            Wire(encode_frame(Kind.BROADCAST, b"short"), "bad", detect=10),
            Wire(encode_frame(Kind.DIRECT, b"ab"), "bad", detect=7),
            Wire(encode_frame(Kind.WELCOME, b"\xa0"), "bad", detect=6),
            Wire(encode_frame(0x77), "bad", detect=5),
            Wire(encode_map(Kind.HELLO, {"version": 1}), "bad", detect=-1),  # the whole frame
        ]
    )


def good_frames(readers: int) -> st.SearchStrategy[Wire]:
    broadcast = st.binary(max_size=LIMIT).map(
        lambda payload: Wire(encode_broadcast(payload, LIMIT), "broadcast")
    )
    targets = st.sampled_from([*range(1, readers + 1), NOBODY])
    direct = st.tuples(targets, st.binary(max_size=40)).map(
        lambda tp: Wire(
            encode_frame(Kind.DIRECT, tp[0].to_bytes(4, "big") + tp[1]), "direct", tp[0]
        )
    )
    control = st.sampled_from([Kind.HEARTBEAT, Kind.READY]).map(
        lambda kind: Wire(encode_frame(kind), "control")
    )
    return st.one_of(broadcast, broadcast, broadcast, direct, control)


@dataclass
class Scenario:
    readers: int
    slow: int
    frames: list[list[Wire]]
    steps: list[tuple[str, int, int]]  # ("send", reader, bytes) or ("die", reader, 0)

    def sent_by(self, reader: int) -> bytes:
        return b"".join(wire.data for wire in self.frames[reader])


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    readers = draw(st.integers(2, 4))
    slow = draw(st.integers(0, 1))
    frames = []
    for _ in range(readers):
        mine = draw(st.lists(good_frames(readers), max_size=12))
        if draw(st.integers(0, 4)) == 0:
            mine.append(draw(bad_frames()))
        frames.append(mine)
    left = [sum(len(w.data) for w in mine) for mine in frames]
    steps: list[tuple[str, int, int]] = []
    alive = set(range(readers))
    while any(left[r] for r in alive) and len(steps) < 80:
        reader = draw(st.sampled_from(sorted(r for r in alive if left[r])))
        if draw(st.integers(0, 30)) == 0:
            steps.append(("die", reader, 0))
            alive.discard(reader)
            continue
        size = draw(st.integers(1, left[reader]))
        steps.append(("send", reader, size))
        left[reader] -= size
    return Scenario(readers, slow, frames, steps)


@dataclass
class Reader:
    """The far end of a reader's connection: everything it receives, as it comes."""

    sock: trio.socket.SocketType
    data: bytearray = field(default_factory=bytearray)
    arrived: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    async def run(self) -> None:
        with self.scope:
            while True:
                chunk = await self.sock.recv(65536)
                if not chunk:
                    return
                self.data += chunk
                self.arrived.set()
                self.arrived = trio.Event()

    async def wait_for(self, size: int) -> None:
        while len(self.data) < size:
            await self.arrived.wait()


@dataclass
class Outcome:
    streams: list[bytes]
    slow_streams: list[bytes]
    reasons: list[str | None]
    truncated: list[int]
    next_seq: int
    broadcasts: int


async def play(scenario: Scenario, relay: str) -> Outcome:
    # One limit for all: the readers' big socket buffers take every write at once, so only a
    # slow peer (small buffers, never reads) ever has bytes queued.
    hub = Hub(max_message_size=LIMIT, outbox_limit=SLOW_LIMIT, relay=relay)
    count = scenario.readers + scenario.slow
    peers: list[Peer] = []
    ends: list[trio.socket.SocketType] = []
    readers: list[Reader] = []
    slow_ends: list[socket.socket] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.run)
            for index in range(count):
                master_end, far_end = socket.socketpair()
                slow = index >= scenario.readers
                if slow:
                    for sock in (master_end, far_end):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                peer = Peer(index + 1, master_end, LIMIT, Events(index + 1))
                nursery.start_soon(hub.serve_peer, peer, 5.0)
                end = trio.socket.from_stdlib_socket(far_end)
                await end.send(encode_map(Kind.HELLO, {"version": 1, "pid": 1}))
                welcome = await end.recv(4096)  # alone: nothing is relayed before it is read
                assert welcome[4] == Kind.WELCOME and len(welcome) == 4 + int.from_bytes(
                    welcome[:4], "big"
                )
                await peer.welcomed.wait()
                if slow:
                    slow_ends.append(far_end)
                peers.append(peer)
                ends.append(end)
                if not slow:
                    reader = Reader(end)
                    readers.append(reader)
                    nursery.start_soon(reader.run)
            await drive(scenario, peers, ends, readers)
            slow_streams = [take_waiting(far_end) for far_end in slow_ends]
            stats = hub.statistics()
            nursery.cancel_scope.cancel()
    for end in ends:
        end.close()
    for far_end in slow_ends:
        far_end.close()
    return Outcome(
        [bytes(r.data) for r in readers],
        slow_streams,
        [p.cut_off_reason for p in peers],
        [p.truncated_bytes for p in peers],
        stats.next_seq,
        stats.broadcasts,
    )


async def drive(
    scenario: Scenario, peers: list[Peer], ends: list[trio.socket.SocketType], readers: list[Reader]
) -> None:
    """Play the steps, waiting after each for what the model says it brings."""
    sent = [0] * scenario.readers
    alive = [True] * scenario.readers  # still a member: not dead, not cut off
    expected = [0] * scenario.readers
    bounds = [
        [(sum(len(w.data) for w in mine[:i]), w) for i, w in enumerate(mine)]
        for mine in scenario.frames
    ]
    for action, who, size in scenario.steps:
        if not alive[who]:
            continue
        if action == "die":
            readers[who].scope.cancel()
            await trio.lowlevel.checkpoint()
            ends[who].close()
            alive[who] = False
            await peers[who].ended.wait()
            continue
        start, stop = sent[who], sent[who] + size
        data = memoryview(scenario.sent_by(who))[start:stop]
        while data:
            data = data[await ends[who].send(data) :]
        sent[who] = stop
        for offset, wire in bounds[who]:
            done = offset + (len(wire.data) if wire.detect <= 0 else wire.detect)
            if not start < done <= stop:
                continue
            if wire.what == "broadcast":
                for r in range(scenario.readers):
                    if alive[r]:
                        expected[r] += len(wire.data)
            elif wire.what == "direct":
                target = wire.target - 1
                if 0 <= target < scenario.readers and alive[target]:
                    expected[target] += len(wire.data)
                else:
                    expected[who] += len(wire.data)  # bounced
            elif wire.what == "bad":
                alive[who] = False
                await peers[who].ended.wait()
        for r in range(scenario.readers):
            if alive[r]:
                await readers[r].wait_for(expected[r])
    for r in range(scenario.readers):
        if alive[r]:
            await readers[r].wait_for(expected[r])


def take_waiting(sock: socket.socket) -> bytes:
    """What a slow peer's socket holds now (reading more would let the relay write more)."""
    sock.setblocking(False)
    taken = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, ConnectionResetError):
            return bytes(taken)
        if not chunk:
            return bytes(taken)
        taken += chunk


def broadcasts_of(stream: bytes) -> bytes:
    out = bytearray()
    offset = 0
    while offset + 5 <= len(stream):
        stop = offset + 4 + int.from_bytes(stream[offset : offset + 4], "big")
        if stream[offset + 4] == Kind.BROADCAST:
            out += stream[offset:stop]
        offset = stop
    return bytes(out)


def normalized(reason: str | None) -> str | None:
    return None if reason is None else re.sub(r"slow consumer: \d+", "slow consumer: N", reason)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_the_c_relay_delivers_what_the_python_relay_delivers(scenario: Scenario) -> None:
    python = trio.run(play, scenario, "python")
    c = trio.run(play, scenario, "c")
    assert c.streams == python.streams
    readers = scenario.readers
    assert c.reasons[:readers] == python.reasons[:readers]
    # Whether a slow peer is cut off depends on how much the kernel took, which depends on the
    # sizes of the writes (the planes' writers differ there): only how it would be cut is the same.
    for reason in c.reasons[readers:] + python.reasons[readers:]:
        assert reason is None or normalized(reason) == normalized(
            f"slow consumer: 0 bytes waiting for it, over the {SLOW_LIMIT}-byte outbox limit"
        )
    assert c.truncated == python.truncated
    assert (c.next_seq, c.broadcasts) == (python.next_seq, python.broadcasts)
    full = max((broadcasts_of(s) for s in python.streams), key=len)
    for stream in c.slow_streams + python.slow_streams:
        assert full.startswith(stream)
