"""The worker's hub intake over a real socketpair: the reader task and an app task that reads for
itself take turns on the socket without losing, reordering or double-delivering a byte, and
``async for`` checkpoints as documented (docs/concepts.md)."""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from stereo.errors import HubClosed
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import BroadcastReader, Kind, Message, encode_broadcast
from stereo.worker.inbox import CHECKPOINT_EVERY, Inbox, ready
from stereo.worker.intake import Intake

MAX = 64 * 1024


def frames(values: list[Any], first_seq: int = 1) -> bytes:
    return b"".join(
        encode_broadcast(cbor2.dumps(value), MAX, seq, 2)
        for seq, value in enumerate(values, first_seq)
    )


class Hub:
    """The master's end of a worker's hub connection, and the worker's intake on the other."""

    def __init__(self, inbox: Inbox) -> None:
        self.master, worker_end = socket.socketpair()
        self.master.setblocking(False)
        self.inbox = inbox
        self.intake = Intake(worker_end, BroadcastReader(MAX), inbox)
        self._worker_end = worker_end

    def send(self, data: bytes) -> None:
        assert self.master.send(data) == len(data)  # small writes: the kernel takes them whole

    async def run_reader(self) -> None:
        """The reader task as the runtime runs it: its error closes the inbox."""
        try:
            await self.intake.run()
        except HubClosed as exc:
            self.inbox.close(exc)

    def close(self) -> None:
        self.master.close()
        self._worker_end.close()


@asynccontextmanager
async def running_hub(inbox: Inbox | None = None) -> AsyncIterator[tuple[Hub, trio.Nursery]]:
    hub = Hub(inbox or Inbox())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.run_reader)
            yield hub, nursery
            nursery.cancel_scope.cancel()
    finally:
        hub.close()


class StepLog(trio.abc.Instrument):
    """Names of the tasks trio runs, in order."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps.append(task.name)


@contextmanager
def logging_steps() -> Iterator[StepLog]:
    log = StepLog()
    trio.lowlevel.add_instrument(log)
    try:
        yield log
    finally:
        trio.lowlevel.remove_instrument(log)


async def test_an_app_waiting_on_an_empty_iterator_reads_the_socket_itself() -> None:
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe()
        got: list[Message] = []
        received = trio.Event()

        async def app() -> None:
            got.append(await stream.__anext__())
            received.set()

        nursery.start_soon(app, name="app")
        await trio.testing.wait_all_tasks_blocked()
        with logging_steps() as log:
            hub.send(frames(["hello"]))
            await received.wait()
        assert [m.data for m in got] == ["hello"]
        # Woken by the socket, the app read and got the message: the reader task never ran
        # in between (it would have read, then woken the app: one more task switch).
        assert log.steps[0] == "app", log.steps
        assert hub.inbox.received == 1


async def test_a_read_the_app_made_reaches_every_subscriber_in_order() -> None:
    async with running_hub() as (hub, nursery):
        mine, other = hub.inbox.subscribe(), hub.inbox.subscribe()
        got: list[int] = []

        async def app() -> None:
            async for message in mine:
                got.append(message.seq)
                if len(got) == 50:
                    break

        nursery.start_soon(app)
        await trio.testing.wait_all_tasks_blocked()
        for start in range(1, 51, 10):
            hub.send(frames(list(range(10)), first_seq=start))
            await trio.testing.wait_all_tasks_blocked()
        assert got == list(range(1, 51))
        assert [m.seq for m in other.receive_nowait()] == list(range(1, 51))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_iterators_cancelled_while_they_wait_lose_no_byte(seed: int) -> None:
    # The byte stream arrives in random pieces (frames split anywhere); between pieces, an
    # app task waits on the iterator and is cancelled, or takes one message. Whatever task
    # read, every message comes out once, in order.
    rng = random.Random(seed)
    count = 300
    stream_bytes = frames([["m", i, "x" * rng.randrange(0, 300)] for i in range(count)])
    got: list[int] = []
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe()
        offset = 0
        while offset < len(stream_bytes):
            piece = rng.randrange(1, 2000)
            hub.send(stream_bytes[offset : offset + piece])
            offset += piece
            scope = trio.CancelScope()

            async def take(scope: trio.CancelScope = scope) -> None:
                with scope:
                    got.append((await stream.__anext__()).data[1])

            nursery.start_soon(take)
            await trio.testing.wait_all_tasks_blocked()
            if rng.random() < 0.7:
                scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
        async for message in stream:  # a later iterator loop still gets the rest
            got.append(message.data[1])
            if len(got) >= count:
                break
    assert got == list(range(count))


class TaskSteps(trio.abc.Instrument):
    """How many steps one task has run (each ends where it yielded to the scheduler)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += task is self.task


async def test_async_for_checkpoints_every_checkpoint_every_messages_and_no_more() -> None:
    total = 4 * CHECKPOINT_EVERY
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe()
        competitor_runs = 0

        async def competitor() -> None:
            nonlocal competitor_runs
            while True:
                competitor_runs += 1
                await trio.lowlevel.checkpoint()

        # Half already buffered in the iterator, half waiting in the socket: read by the app.
        hub.inbox.deliver([Message(i, 2, i) for i in range(total // 2)], 100)
        hub.send(frames(list(range(total // 2, total)), first_seq=total // 2))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(competitor)
        steps = TaskSteps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        yielded_before: list[int] = []
        try:
            async for message in stream:
                yielded_before.append(steps.count)
                if message.data == total - 1:
                    break
        finally:
            trio.lowlevel.remove_instrument(steps)
        runs = competitor_runs
    assert len(yielded_before) == total
    # This task yielded within every CHECKPOINT_EVERY messages, so the competing task ran...
    for start in range(total - CHECKPOINT_EVERY):
        assert yielded_before[start + CHECKPOINT_EVERY] > yielded_before[start], start
    assert runs >= total // CHECKPOINT_EVERY - 1
    # ...but not after each message: no scheduler round per message.
    assert yielded_before[-1] - yielded_before[0] <= total // CHECKPOINT_EVERY + 1


async def test_a_full_iterator_stops_the_apps_reads_too() -> None:
    async with running_hub(Inbox(limit=5)) as (hub, nursery):
        never_read = hub.inbox.subscribe()
        read = hub.inbox.subscribe()
        got: list[int] = []

        async def app() -> None:
            async for message in read:
                got.append(message.seq)

        nursery.start_soon(app)
        await trio.testing.wait_all_tasks_blocked()
        for seq in range(1, 21):
            hub.send(frames([seq], first_seq=seq))
            await trio.testing.wait_all_tasks_blocked()
        # One read at a time: the socket delivered nothing past the read that filled the
        # unread iterator, whichever task read.
        assert got == [1, 2, 3, 4, 5]
        assert len(never_read.receive_nowait()) == 5  # makes room: reading resumes
        await trio.testing.wait_all_tasks_blocked()
        assert got == list(range(1, 21))  # the other 15 were waiting: one read took them
        assert [m.seq for m in never_read.receive_nowait()] == list(range(6, 21))


async def test_the_end_of_the_connection_met_by_the_app_ends_iterators_with_hubclosed() -> None:
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe()
        got: list[int] = []

        async def last_words_then_eof() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the app waits on the socket
            hub.send(frames(["a", "b"]))
            hub.master.shutdown(socket.SHUT_WR)

        nursery.start_soon(last_words_then_eof)
        with (
            trio.fail_after(10),
            pytest.raises(HubClosed, match="the master closed the hub connection"),
        ):
            async for message in stream:
                got.append(message.seq)
        assert got == [1, 2]
        assert isinstance(hub.intake.error, HubClosed)
        with pytest.raises(HubClosed):
            hub.inbox.subscribe()


async def test_side_frames_met_by_the_app_go_to_their_handler() -> None:
    # The job pool's frames arrive among broadcasts; the app's own reads hand them on too.
    async with running_hub() as (hub, nursery):
        side: list[tuple[int, bytes]] = []
        hub.intake._broadcasts.on_frame = lambda kind, body: side.append((kind, body))
        stream = hub.inbox.subscribe()
        got: list[Message] = []

        async def app() -> None:
            got.append(await stream.__anext__())

        nursery.start_soon(app)
        await trio.testing.wait_all_tasks_blocked()
        members = encode_frame(Kind.MEMBERS, b"\x80")
        hub.send(members + frames(["after"]))
        await trio.testing.wait_all_tasks_blocked()
        assert side == [(Kind.MEMBERS, b"\x80")]
        assert [m.data for m in got] == ["after"]


@pytest.mark.skipif(ready is None, reason="the C accelerator is not built")
async def test_a_queued_message_comes_back_through_a_ready_awaitable() -> None:
    assert ready is not None
    message = Message(["a"], 2, 9)
    awaitable = ready(message)
    assert await awaitable is message
    with pytest.raises(RuntimeError, match="already awaited"):
        await awaitable
    # The traced path (a debugger, coverage) takes the iterator protocol instead of am_send:
    # the value must still come back whole, not unpacked as exception arguments.
    previous = sys.gettrace()
    sys.settrace(lambda *args: None)
    try:
        assert await ready(message) is message
    finally:
        sys.settrace(previous)
    inbox = Inbox()
    stream = inbox.subscribe()
    inbox.deliver([message, Message("b", 2, 10)], 60)
    assert [await stream.__anext__(), await stream.__anext__()] == [message, ("b", 2, 10)]
    inbox.deliver([Message("c", 2, 11)], 30)
    assert await anext(stream, None) == ("c", 2, 11)  # the builtin's wrapper awaits it too
    stream.close()
    assert await anext(stream, "closed") == "closed"


FLOOD = 30_000


async def _flood(hub: Hub, count: int) -> None:
    """Every message at once, as fast as the socket takes them (the master in a burst)."""
    data = memoryview(frames([b"x" * 64] * count))
    while data:
        await trio.lowlevel.wait_writable(hub.master)
        data = data[hub.master.send(data) :]


async def test_in_a_flood_the_queue_of_an_iterator_being_drained_stays_short() -> None:
    # The reader task reads ahead in small pieces while the app still has messages to take:
    # read-ahead at full size would grow the queue to tens of thousands of messages.
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe()
        nursery.start_soon(_flood, hub, FLOOD)
        longest = taken = 0
        with trio.fail_after(30):
            async for _ in stream:
                longest = max(longest, len(stream._queue))
                taken += 1
                if taken == FLOOD:
                    break
        # One 64 KiB read of 85-byte frames is about 770 messages.
        assert longest < 5_000, longest


async def test_an_iterator_nobody_drains_still_fills_to_its_limit() -> None:
    # The slack a busy consumer has is its limit, whatever the size of the reads.
    async with running_hub() as (hub, nursery):
        stream = hub.inbox.subscribe(limit=10_000)
        nursery.start_soon(_flood, hub, FLOOD)
        with trio.fail_after(30):
            while not stream.full:
                await hub.inbox.wait_for_room()  # returns at once while it is not full
                await trio.testing.wait_all_tasks_blocked()
        assert 10_000 <= len(stream._queue) < FLOOD
