"""The relay in-process: a Hub serving socketpair peers that the test drives byte by byte."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from stereo.master import cplane
from stereo.master.hub import Hub, Peer
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import BroadcastReader, Kind, encode_broadcast, encode_map

LIMIT = 1024
# The data plane the tests' hubs use: every test runs on both (the C one when it is built).
RELAY = ["python"]


@pytest.fixture(autouse=True, params=["python", "c"])
def relay(request: pytest.FixtureRequest) -> str:
    if request.param == "c" and not cplane.available():
        pytest.skip("the C relay is not built")
    RELAY[0] = request.param
    return str(request.param)


class Events:
    """Stands in for the worker process a peer reports to (PeerEvents)."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.seen: list[str] = []

    def welcome(self) -> dict[str, Any]:
        return {"version": 1, "slot": self.worker_id, "max_message_size": LIMIT}

    def ready(self) -> None:
        self.seen.append("ready")

    def heartbeat(self) -> None:
        self.seen.append("heartbeat")

    def boot_error(self, reason: str) -> None:
        self.seen.append(f"boot error: {reason}")


class FakeWorker:
    """The worker's end of a hub connection, speaking raw bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = BroadcastReader(LIMIT)
        self.received: list[tuple[Any, int, int]] = []

    async def hello(self) -> None:
        await self.stream.send_all(encode_map(Kind.HELLO, {"version": 1, "pid": 1}))
        await self.hello_answered()

    async def hello_answered(self) -> None:
        data = b""
        while len(data) < 5 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            data += await self.stream.receive_some(4096)
        length = int.from_bytes(data[:4], "big")
        assert data[4] == Kind.WELCOME
        self.reader.receive_data(data[4 + length :])

    async def receive(self, count: int) -> list[tuple[Any, int, int]]:
        while len(self.received) < count:
            self.received.extend(self.reader.deliveries())
            if len(self.received) >= count:
                break
            data = await self.stream.receive_some(65536)
            assert data, "connection closed"
            self.reader.receive_data(data)
        return self.received[:count]

    async def closed(self) -> bool:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


def lone_peer() -> tuple[Hub, Peer, socket.socket]:
    """A hub and one peer it has not served yet, with the worker's end of its socketpair."""
    hub = Hub(max_message_size=LIMIT, outbox_limit=1 << 20, relay=RELAY[0])
    master_end, worker_end = socket.socketpair()
    return hub, Peer(1, master_end, LIMIT, Events(1)), worker_end


@asynccontextmanager
async def open_hub(
    workers: int, outbox_limit: int = 1 << 20
) -> AsyncIterator[tuple[Hub, list[FakeWorker], list[Peer]]]:
    hub = Hub(max_message_size=LIMIT, outbox_limit=outbox_limit, relay=RELAY[0])
    fakes, peers = [], []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        for worker_id in range(1, workers + 1):
            master_end, worker_end = socket.socketpair()
            peer = Peer(worker_id, master_end, LIMIT, Events(worker_id))
            nursery.start_soon(hub.serve_peer, peer, 5.0)
            fake = FakeWorker(trio.SocketStream(trio.socket.from_stdlib_socket(worker_end)))
            await fake.hello()
            await peer.welcomed.wait()
            fakes.append(fake)
            peers.append(peer)
        try:
            yield hub, fakes, peers
        finally:
            nursery.cancel_scope.cancel()
            for fake in fakes:
                fake.stream.socket.close()


async def test_every_peer_gets_every_broadcast_stamped_in_one_order() -> None:
    with trio.fail_after(10):
        async with open_hub(3) as (hub, fakes, _):
            for n in range(10):
                await fakes[n % 3].stream.send_all(encode_broadcast(cbor2.dumps(n), LIMIT))
            got = [await fake.receive(10) for fake in fakes]
            assert got[0] == got[1] == got[2]
            assert [seq for _, _, seq in got[0]] == list(range(1, 11))
            assert sorted(value for value, _, _ in got[0]) == list(range(10))
            assert all(sender == value % 3 + 1 for value, sender, _ in got[0])
            assert hub.statistics().deliveries == 30


async def test_a_bad_control_frame_cuts_off_and_seq_stays_consecutive() -> None:
    with trio.fail_after(10):
        async with open_hub(2) as (hub, fakes, peers):
            bad, good = fakes
            b = encode_broadcast(cbor2.dumps("before"), LIMIT)
            after = encode_broadcast(cbor2.dumps("after"), LIMIT)
            hello = encode_map(Kind.HELLO, {"version": 1, "pid": 1})
            await bad.stream.send_all(b + hello + after)  # HELLO twice: protocol error
            assert await bad.closed()
            assert peers[0].cut_off_reason is not None
            assert "unexpected HELLO" in peers[0].cut_off_reason
            await good.stream.send_all(encode_broadcast(cbor2.dumps("next"), LIMIT))
            got = await good.receive(2)
            assert got == [("before", 1, 1), ("next", 2, 2)]  # "after" never relayed, no gap
            assert hub.statistics().cutoffs == 1


async def test_a_slow_consumer_is_cut_off_not_skipped() -> None:
    with trio.fail_after(20):
        async with open_hub(2, outbox_limit=512 * 1024) as (_, fakes, peers):
            flooder, sleeper = fakes
            payload = cbor2.dumps(b"x" * 900)
            frame = encode_broadcast(payload, LIMIT)
            async with trio.open_nursery() as nursery:

                async def drain_own_copy() -> None:
                    await flooder.receive(10**9)

                nursery.start_soon(drain_own_copy)
                # The sleeper never reads; socket buffers fill, then its outbox passes the bound.
                while peers[1].cut_off_reason is None:
                    await flooder.stream.send_all(frame * 8)
                nursery.cancel_scope.cancel()
            assert "slow consumer" in peers[1].cut_off_reason
            # Memory stays bounded: the limit plus at most one received batch.
            assert peers[1].pending_bytes <= 512 * 1024 + 256 * 1024
            assert 512 * 1024 < peers[1].peak_pending_bytes <= 512 * 1024 + 256 * 1024
            assert await sleeper.closed()
            assert peers[0].cut_off_reason is None


async def test_control_frames_go_to_the_process_owner_not_to_the_workers() -> None:
    with trio.fail_after(10):
        async with open_hub(2) as (_, fakes, peers):
            await fakes[0].stream.send_all(
                encode_frame(Kind.READY)
                + encode_frame(Kind.HEARTBEAT)
                + encode_map(Kind.BOOT_ERROR, {"reason": "no such module"})
            )
            await fakes[0].stream.send_all(encode_broadcast(cbor2.dumps(1), LIMIT))
            # Relayed in order after the control frames, which reached the owner and no worker.
            assert await fakes[1].receive(1) == [(1, 1, 1)]
            events = peers[0].events
            assert isinstance(events, Events)
            assert events.seen == ["ready", "heartbeat", "boot error: no such module"]


async def test_a_connection_ending_inside_a_frame_drops_the_partial_frame() -> None:
    with trio.fail_after(10):
        async with open_hub(2) as (hub, fakes, peers):
            frame = encode_broadcast(cbor2.dumps("half"), LIMIT)
            await fakes[0].stream.send_all(frame[:-3])
            await fakes[0].stream.send_eof()
            await peers[0].ended.wait()
            assert peers[0].truncated_bytes == len(frame) - 3  # recorded, and dropped
            assert peers[0].cut_off_reason is None  # a worker killed mid-write ends this way too
            await fakes[1].stream.send_all(encode_broadcast(cbor2.dumps("next"), LIMIT))
            assert await fakes[1].receive(1) == [("next", 2, 1)]  # the half frame never went out
            assert hub.statistics().broadcasts == 1


async def test_a_hello_left_unread_by_a_stalled_master_is_not_a_timeout(
    mock_clock: trio.testing.MockClock,
) -> None:
    hub, peer, worker_end = lone_peer()
    fake = FakeWorker(trio.SocketStream(trio.socket.from_stdlib_socket(worker_end)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve_peer, peer, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        # The worker says HELLO, but the master is stopped for a minute before reading it.
        await fake.stream.send_all(encode_map(Kind.HELLO, {"version": 1, "pid": 1}))
        mock_clock.jump(60)
        await fake.hello_answered()
        await peer.welcomed.wait()
        assert peer.cut_off_reason is None
        nursery.cancel_scope.cancel()
    await fake.stream.aclose()


async def test_no_hello_within_the_handshake_window_is_cut_off(
    mock_clock: trio.testing.MockClock,
) -> None:
    hub, peer, worker_end = lone_peer()
    with worker_end:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve_peer, peer, 5.0)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(4.9)
            await trio.testing.wait_all_tasks_blocked()
            assert not peer.ended.is_set()
            mock_clock.jump(0.2)
            await peer.ended.wait()
            assert peer.cut_off_reason == "no HELLO within 5 s"


async def test_a_first_frame_that_is_not_hello_is_a_protocol_error() -> None:
    hub, peer, worker_end = lone_peer()
    with trio.fail_after(10), worker_end:
        worker_end.sendall(encode_frame(Kind.READY))
        await hub.serve_peer(peer, 5.0)
    assert peer.cut_off_reason == "protocol error: the first frame must be HELLO, alone"
    assert hub.statistics().cutoffs == 1


async def test_a_first_frame_over_the_limit_is_cut_off_for_what_it_is() -> None:
    hub, peer, worker_end = lone_peer()
    with trio.fail_after(10), worker_end:
        worker_end.sendall(encode_map(Kind.HELLO, {"version": 1, "pid": 1, "pad": "x" * LIMIT}))
        await hub.serve_peer(peer, 5.0)
    assert peer.cut_off_reason == (
        f"protocol error: frame of {LIMIT + 22} bytes announced; the limit is {LIMIT + 12}"
    )


async def test_direct_frames_for_nobody_come_back_bounced_each_on_its_own() -> None:
    with trio.fail_after(10):
        async with open_hub(1) as (_, fakes, _):
            frame = encode_frame(Kind.DIRECT, (999).to_bytes(4, "big") + b"job")
            await fakes[0].stream.send_all(frame + frame)  # one read: relayed as one slice
            data = b""
            while len(data) < 2 * len(frame):
                data += await fakes[0].stream.receive_some(4096)
            bounced = encode_frame(Kind.BOUNCED, (999).to_bytes(4, "big") + b"job")
            assert data == bounced + bounced
