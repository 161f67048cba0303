"""The Outbox both ends of the hub write through, over real socketpairs."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
import trio.testing

from stereo import outbox as outbox_module
from stereo.errors import HubClosed
from stereo.outbox import Outbox, send_chunks


@contextmanager
def socketpair(sndbuf: int | None = None) -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        if sndbuf is not None:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        yield a, b


def received_now(sock: socket.socket) -> bytes:
    """What already arrived at ``sock``, without waiting."""
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return data
        data += chunk


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    reader = trio.socket.from_stdlib_socket(sock)
    data = b""
    while len(data) < size:
        data += await reader.recv(1 << 20)
    return data


@asynccontextmanager
async def writing(outbox: Outbox, stream: trio.SocketStream) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.write_loop, stream)
        yield
        nursery.cancel_scope.cancel()


def test_an_idle_outbox_sends_directly_and_queues_nothing() -> None:
    with socketpair() as (a, b):
        outbox = Outbox(a)
        outbox.send(b"hello")
        assert outbox.chunks == [] and outbox.pending_bytes == 0
        assert outbox.bytes_written == 5
        assert received_now(b) == b"hello"


async def test_a_partial_send_queues_the_rest_and_later_chunks_behind_it() -> None:
    with socketpair(sndbuf=4096) as (a, b):
        outbox = Outbox(a)
        big = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
        outbox.send(big)
        direct = outbox.bytes_written
        assert 0 < direct < len(big)
        assert outbox.queued_bytes == len(big) - direct
        outbox.send(b"after")  # queued behind the rest, never written before it
        assert outbox.chunks[-1] == b"after"
        with trio.fail_after(10):
            async with writing(outbox, trio.SocketStream(trio.socket.from_stdlib_socket(a))):
                assert await read_exactly(b, len(big) + 5) == big + b"after"
                await outbox.wait_flushed()
        assert outbox.pending_bytes == 0
        assert outbox.bytes_written == len(big) + 5
        assert outbox.peak_bytes == len(big) - direct + 5


def test_direct_sends_closer_than_the_gap_are_queued_for_the_writer() -> None:
    with socketpair() as (a, b):
        outbox = Outbox(a, direct_gap=3600.0)
        outbox.send(b"first")
        outbox.send(b"second")  # idle again, but within the gap: queued
        assert received_now(b) == b"first"
        assert outbox.chunks == [b"second"]
    unconnected = Outbox(None)
    unconnected.send(b"x")
    assert unconnected.chunks == [b"x"]


def test_the_fit_rule_counts_queued_bytes_and_the_bound_counts_all_held() -> None:
    outbox = Outbox(None, limit=100)
    assert outbox.fits(1000)  # an empty outbox takes any chunk
    outbox.put(b"x" * 60)
    assert outbox.fits(40) and not outbox.fits(41)
    assert outbox.take() == [b"x" * 60]
    assert outbox.fits(100)  # the batch being written leaves room for the next one...
    assert not outbox.put(b"y" * 40)
    assert outbox.put(b"z" * 10)  # ...but it is still held: the master's bound counts it
    assert outbox.queued_bytes == 50 and outbox.pending_bytes == 110


def test_offer_queues_only_what_fits_and_nothing_once_closed() -> None:
    outbox = Outbox(None, limit=100)
    assert outbox.offer(b"x" * 150)  # an empty outbox takes any chunk
    assert not outbox.offer(b"y")
    outbox.take()
    assert outbox.offer(b"a" * 60) and outbox.offer(b"b" * 40)
    assert not outbox.offer(b"c")
    assert outbox.chunks == [b"a" * 60, b"b" * 40]
    outbox.take()
    outbox.close(HubClosed("gone"))
    assert not outbox.offer(b"d")
    assert outbox.chunks == []


async def test_a_sender_waits_for_room_until_the_writer_takes_the_outbox() -> None:
    outbox = Outbox(None, limit=100)
    outbox.put(b"x" * 80)
    done = trio.Event()

    async def sender() -> None:
        await outbox.wait_for_room(30)
        outbox.put(b"y" * 30)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        outbox.take()
        await done.wait()
    assert outbox.chunks == [b"y" * 30]


async def test_every_sender_waiting_at_once_is_woken() -> None:
    outbox = Outbox(None, limit=100)
    outbox.put(b"x" * 100)
    woken: list[int] = []

    async def sender(n: int) -> None:
        await outbox.wait_for_room(10)
        woken.append(n)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(sender, n)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            outbox.take()
    assert sorted(woken) == [0, 1, 2]


async def test_closing_wakes_waiting_senders_with_the_error() -> None:
    outbox = Outbox(None, limit=10)
    outbox.put(b"x" * 10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                with pytest.raises(HubClosed, match="gone"):
                    await outbox.wait_for_room(5)

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            outbox.close(HubClosed("gone"))
    with pytest.raises(HubClosed):
        await outbox.wait_for_room(1)


async def test_the_writer_joins_everything_queued_since_its_last_wakeup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[list[bytes]] = []

    async def recording_send_chunks(stream: trio.SocketStream, chunks: list[bytes]) -> int:
        writes.append(list(chunks))
        return await send_chunks(stream, chunks)

    monkeypatch.setattr(outbox_module, "send_chunks", recording_send_chunks)
    with socketpair() as (a, b):
        outbox = Outbox(a)
        for chunk in (b"one", b"two", b"three"):
            outbox.put(chunk)
        with trio.fail_after(5):
            async with writing(outbox, trio.SocketStream(trio.socket.from_stdlib_socket(a))):
                await outbox.wait_flushed()
                assert writes == [[b"one", b"two", b"three"]]  # one write for the three
                outbox.put(b"four")
                await outbox.wait_flushed()
            assert await read_exactly(b, 15) == b"onetwothreefour"
        assert writes == [[b"one", b"two", b"three"], [b"four"]]
        assert outbox.bytes_written == 15


async def test_wait_flushed_returns_only_once_the_kernel_has_everything() -> None:
    with socketpair(sndbuf=4096) as (a, b):
        outbox = Outbox(a)
        data = b"z" * (1 << 20)  # more than the socket buffers hold
        outbox.put(data)
        flushed = trio.Event()
        with trio.fail_after(10):
            async with writing(outbox, trio.SocketStream(trio.socket.from_stdlib_socket(a))):

                async def waiter() -> None:
                    await outbox.wait_flushed()
                    flushed.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiter)
                    await trio.testing.wait_all_tasks_blocked()
                    assert not flushed.is_set()  # the writer is stuck: nobody reads yet
                    assert outbox.in_flight == len(data)
                    assert await read_exactly(b, len(data)) == data
        assert flushed.is_set() and outbox.pending_bytes == 0


async def test_a_cleared_outbox_forgets_its_chunks_and_the_writer_carries_on() -> None:
    with socketpair() as (a, b):
        outbox = Outbox(a)
        outbox.put(b"dropped")
        outbox.clear()
        assert outbox.pending_bytes == 0 and outbox.peak_bytes == 7
        with trio.fail_after(5):
            async with writing(outbox, trio.SocketStream(trio.socket.from_stdlib_socket(a))):
                await trio.testing.wait_all_tasks_blocked()  # woken for nothing: waits again
                outbox.put(b"kept")
                assert await read_exactly(b, 4) == b"kept"
