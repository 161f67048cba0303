"""Topics (stereo.publish / stereo.subscribe): filtering, the one order across workers, and a
lagging subscriber's cut-off, which never holds back the worker or hides a gap."""

from __future__ import annotations

import json

import cbor2
import pytest
import trio
from cbor2 import CBORTag
from conftest import open_stereo

from stereo import SubscriberCutOff
from stereo.errors import HubClosed
from stereo.wire.protocol import Message
from stereo.worker.inbox import Inbox
from stereo.worker.topics import TOPIC_TAG, Event, Subscription, topic_event


def batch(*items: tuple[object, int]) -> list[Message]:
    """Messages as a worker receives them: each value through CBOR and back."""
    return [Message(cbor2.loads(cbor2.dumps(data)), 1, seq) for data, seq in items]


async def test_a_subscription_takes_its_channel_only_in_order() -> None:
    inbox = Inbox()
    sub = Subscription(inbox, "chat", limit=10)
    inbox.deliver(
        batch(
            (topic_event("chat", "one"), 1),
            ("plain broadcast", 2),
            (topic_event("other", "x"), 3),
            ([CBORTag(TOPIC_TAG, "chat")], 4),  # not a pair: not an event
            ([CBORTag(TOPIC_TAG + 1, "chat"), "x"], 5),  # another tag
            (topic_event("chat", {"two": [2]}), 6),
        ),
        100,
    )
    assert not inbox.full()  # a subscription never holds the hub reader back
    with trio.fail_after(5):
        assert await sub.__anext__() == Event("chat", "one", 1, 1)
        event = await sub.__anext__()
        assert event == Event("chat", {"two": [2]}, 1, 6)
        # As sent: plain (mutable) dicts and lists, as broadcast delivers them.
        assert type(event.message) is dict and type(event.message["two"]) is list
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    assert sub not in inbox.streams


async def test_a_lagging_subscription_gets_everything_up_to_the_cut_then_an_error() -> None:
    inbox = Inbox()
    sub = Subscription(inbox, "t", limit=3)
    keeping_up = Subscription(inbox, "t", limit=100)
    inbox.deliver(batch(*((topic_event("t", n), n) for n in range(1, 6))), 50)
    assert sub.cut_off and not keeping_up.cut_off
    inbox.deliver(batch((topic_event("t", 6), 6)), 10)  # after the cut: never seen by sub
    with trio.fail_after(5):
        assert [(await sub.__anext__()).message for _ in range(3)] == [1, 2, 3]
        with pytest.raises(SubscriberCutOff, match="fell 3 events behind"):
            await sub.__anext__()
        assert [(await keeping_up.__anext__()).message for _ in range(6)] == [1, 2, 3, 4, 5, 6]


async def test_a_subscription_raises_the_hub_error_once_read_empty() -> None:
    inbox = Inbox()
    sub = Subscription(inbox, "t", limit=3)
    inbox.deliver(batch((topic_event("t", "last"), 1)), 10)
    inbox.close(HubClosed("gone"))
    with trio.fail_after(5):
        assert (await sub.__anext__()).message == "last"
        with pytest.raises(HubClosed, match="gone"):
            await sub.__anext__()
    with pytest.raises(HubClosed):
        Subscription(inbox, "t", limit=3)


async def test_every_worker_sees_a_channel_in_one_order_and_a_laggard_is_cut_off() -> None:
    workers, count = 3, 60
    env = {"TOPIC_WORKERS": str(workers), "TOPIC_COUNT": str(count)}
    async with open_stereo("topics_app:serve", "-w", str(workers), env=env) as stereo:
        with trio.fail_after(60):
            results = await stereo.wait_for(r"^\[worker \d\] RESULT ", count=workers)
            cutoff = (await stereo.wait_for(r"^\[worker 1\] CUTOFF (.*)$"))[0]
    lists = [json.loads(match.string.split("RESULT ", 1)[1]) for match in results]
    first = lists[0]
    assert all(other == first for other in lists[1:])  # one order, on every worker
    seqs = [seq for seq, _, _ in first]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Exactly the "a" events: every worker's 0..count-1, in the order each published them.
    for sender in range(1, workers + 1):
        assert [n for _, s, n in first if s == sender] == list(range(count))
    report = json.loads(cutoff.group(1))
    assert report["kept"] == 5
    assert "cut off" in report["error"]
