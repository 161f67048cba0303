"""The Worker object an app receives, driven without processes (its I/O lives elsewhere)."""

from __future__ import annotations

import cbor2
import pytest
import trio
import trio.testing

from stereo import EncodeError, HubClosed, Message, MessageTooLarge, Worker
from stereo.outbox import Outbox
from stereo.worker.inbox import Inbox
from stereo.worker.listeners import ConnectionTracker


class Runtime:
    """Stands in for the worker runtime: the outbox and inbox it would drive."""

    def __init__(self, outbox_limit: int, inbox_limit: int, inbox_bytes: int) -> None:
        self.outbox = Outbox(None, outbox_limit)  # no hub socket: everything stays queued
        self.inbox = Inbox(inbox_limit, max_bytes=inbox_bytes)

    def deliver(self, messages: list[Message], size: int | None = None) -> None:
        """A batch as the hub reader delivers it (``size``: its bytes on the wire)."""
        self.inbox.deliver(messages, 30 * len(messages) if size is None else size)

    def lose_hub(self, error: HubClosed) -> None:
        self.inbox.close(error)
        self.outbox.close(error)


def make_worker(
    outbox_limit: int = 1000,
    inbox_limit: int = 100,
    max_message_size: int = 100,
    inbox_bytes: int = 1 << 20,
) -> tuple[Worker, Runtime]:
    hub = Runtime(outbox_limit, inbox_limit, inbox_bytes)
    worker = Worker(
        7,
        [],
        ConnectionTracker(),
        max_message_size=max_message_size,
        outbox=hub.outbox,
        inbox=hub.inbox,
    )
    return worker, hub


async def test_oversize_and_unencodable_values_raise_and_send_nothing() -> None:
    worker, _ = make_worker()
    with pytest.raises(MessageTooLarge, match="limit is 100"):
        await worker.broadcast("x" * 200)
    with pytest.raises(EncodeError, match="cannot encode"):
        worker.broadcast_nowait(object())
    assert worker.statistics().outbox_bytes == 0
    assert worker.statistics().sent == 0


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_a_value_nested_deeper_than_receivers_decode_raises_and_sends_nothing() -> None:
    # cbor2 encodes any depth, but its decoder refuses an item inside more than 400 containers:
    # sent, such a value would reach every receiver as an UndecodablePayload.
    worker, hub = make_worker(outbox_limit=1_000_000, max_message_size=1_000_000)
    deepest = nested(400)
    assert cbor2.loads(cbor2.dumps(deepest)) == deepest
    with pytest.raises(cbor2.CBORDecodeError):
        cbor2.loads(cbor2.dumps(nested(401)))
    with pytest.raises(EncodeError, match="nested more than 400 levels deep"):
        worker.broadcast_nowait(nested(401))
    with pytest.raises(EncodeError, match="nested more than 400 levels deep"):
        await worker.broadcast({"k": [cbor2.CBORTag(40000, nested(398))]})  # 401 with the tag
    assert worker.statistics().sent == 0
    assert hub.outbox.queued_bytes == 0
    await worker.broadcast(deepest)  # the deepest value receivers take still goes
    assert worker.statistics().sent == 1


async def test_broadcast_nowait_raises_wouldblock_when_the_outbox_is_full() -> None:
    worker, hub = make_worker(outbox_limit=200)
    sent = 0
    with pytest.raises(trio.WouldBlock):
        while True:
            worker.broadcast_nowait("x" * 50)
            sent += 1
    assert sent == 2  # 2 x 69 bytes fit in 200; the third would not
    frames = hub.outbox.take()
    assert len(frames) == 2
    worker.broadcast_nowait("x" * 50)  # room again once the writer took the outbox


async def test_broadcast_waits_for_room_instead_of_failing() -> None:
    worker, hub = make_worker(outbox_limit=100)
    await worker.broadcast("x" * 50)
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def second() -> None:
            await worker.broadcast("y" * 50)
            done.set()

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        hub.outbox.take()
        await done.wait()
    assert worker.statistics().sent == 2


async def test_an_iterator_gets_what_arrives_after_messages_was_called() -> None:
    worker, hub = make_worker()
    hub.deliver([Message("before", 1, 1)])  # nobody subscribed: discarded, counted
    inbox = worker.messages()  # subscribed now, before any await
    hub.deliver([Message("a", 1, 2), Message("b", 2, 3)])
    late = worker.messages()
    hub.deliver([Message("c", 0, 4)])
    assert [(await inbox.__anext__()).data for _ in range(3)] == ["a", "b", "c"]
    assert [(await late.__anext__()).data] == ["c"]
    assert worker.statistics().discarded == 1
    assert worker.statistics().received == 4
    inbox.close()
    with pytest.raises(StopAsyncIteration):
        await inbox.__anext__()


async def test_a_full_iterator_holds_back_the_hub_reader() -> None:
    worker, hub = make_worker(inbox_limit=3)
    inbox = worker.messages()
    hub.deliver([Message(i, 1, i) for i in range(3)])
    assert hub.inbox.full()  # the reader stops reading: backpressure to the master
    await inbox.__anext__()
    assert not hub.inbox.full()


async def test_an_iterator_is_full_at_its_bytes_too_counted_per_batch() -> None:
    worker, hub = make_worker(inbox_limit=100, inbox_bytes=1000)
    inbox = worker.messages()
    hub.deliver([Message(i, 1, i) for i in (1, 2)], size=600)
    assert not hub.inbox.full()
    late = worker.messages()  # counts from its own subscription on
    hub.deliver([Message(i, 1, i) for i in (3, 4)], size=600)
    assert hub.inbox.full()  # 1200 bytes in `inbox`: the reader stops reading
    await inbox.__anext__()
    assert hub.inbox.full()  # a batch counts until its last message is taken
    await inbox.__anext__()
    assert not hub.inbox.full()  # 600 bytes left in each
    hub.deliver([Message(5, 1, 5)], size=500)
    assert hub.inbox.full()  # 1100 in `inbox`, and in `late` too
    assert [m.seq for m in inbox.receive_nowait()] == [3, 4, 5]
    assert hub.inbox.full()  # `late` still holds 1100
    late.close()
    assert not hub.inbox.full()
    hub.deliver([Message(6, 1, 6)], size=5000)  # one batch over the limit still goes in...
    assert [m.seq for m in await inbox.receive_batch()] == [6]  # ...and out
    assert not hub.inbox.full()


async def test_iterators_end_with_hubclosed_when_the_master_is_gone() -> None:
    worker, hub = make_worker()
    inbox = worker.messages()
    hub.lose_hub(HubClosed("the master closed the hub connection"))
    with pytest.raises(HubClosed):
        await inbox.__anext__()
    with pytest.raises(HubClosed):
        await worker.broadcast("x")


async def test_batches_take_everything_queued_and_wait_when_empty() -> None:
    worker, hub = make_worker(inbox_limit=3)
    inbox = worker.messages()
    hub.deliver([Message(i, 1, i) for i in range(1, 4)])
    assert hub.inbox.full()
    batches = inbox.batches()
    assert [m.seq for m in await batches.__anext__()] == [1, 2, 3]
    assert not hub.inbox.full()  # taking a batch makes room: the hub reader resumes
    async with trio.open_nursery() as nursery:
        got: list[list[int]] = []

        async def next_batch() -> None:
            got.append([m.seq for m in await inbox.receive_batch()])

        nursery.start_soon(next_batch)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # nothing queued: it waits
        hub.deliver([Message("x", 2, 4), Message("y", 2, 5)])
    assert got == [[4, 5]]
    inbox.close()
    with pytest.raises(StopAsyncIteration):
        await batches.__anext__()


def test_the_public_names_are_importable_where_they_were() -> None:
    import stereo
    import stereo.worker

    assert stereo.worker.Worker is stereo.Worker  # stereo.worker was a module before
    assert stereo.worker.MessageStream is stereo.MessageStream
    assert stereo.worker.WorkerStatistics is stereo.WorkerStatistics
    for name in stereo.__all__:
        assert getattr(stereo, name) is not None
