"""Topics on top of broadcast: ``stereo.publish(channel, message)`` and
``async with stereo.subscribe(channel) as sub: async for event in sub``.

Shaped like encode/broadcaster so its users feel at home, with stereo's guarantees: a topic
event is one broadcast (``[channel tagged TOPIC_TAG, message]``), so every subscriber of a
channel, on every worker, sees that channel's events in the one hub order.

A subscription never holds back its worker: unlike a ``messages()`` iterator (whose backlog
stops the worker reading, until the master cuts the whole worker off), a subscriber that falls
``limit`` events behind is cut off alone. It still receives every event up to the cut, then
its iterator raises :class:`~stereo.errors.SubscriberCutOff`: a gap is always visible. One slow
WebSocket client costs its own subscription, never its neighbours'.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import trio
from cbor2 import CBORTag

from ..errors import SubscriberCutOff
from ..wire.protocol import Message
from .current import current_worker
from .inbox import CHECKPOINT_EVERY, Inbox

# A CBOR tag from the first-come-first-served range (RFC 8949 section 9.2): "STE".
TOPIC_TAG = 0x535445
# Events one subscription may hold unread before it is cut off. A subscriber this far behind
# (a WebSocket client that stopped reading, typically) is better told than waited for.
DEFAULT_SUBSCRIBER_LIMIT = 4096


class Event(NamedTuple):
    """One published message as a subscriber receives it."""

    channel: str
    message: Any
    sender: int  # the publishing worker's id (0 = the master's console)
    seq: int  # the hub's sequence number: the one order across workers


def topic_event(channel: str, message: Any) -> list[Any]:
    """The broadcast value that carries ``message`` on ``channel``.

    Only the channel is tagged: cbor2 decodes whatever a tag encloses as immutable (tuples,
    frozen dicts), and the message must reach subscribers as the lists and dicts it was sent as.
    """
    return [CBORTag(TOPIC_TAG, channel), message]


async def publish(channel: str, message: Any) -> None:
    """Send ``message`` to every subscriber of ``channel`` in every worker (this one included).

    Waits, like ``Worker.broadcast``, only while the worker's outbox is full.
    """
    if not isinstance(channel, str):
        raise TypeError(f"a channel is a str, not {type(channel).__name__}")
    await current_worker().broadcast(topic_event(channel, message))


@asynccontextmanager
async def subscribe(
    channel: str, *, limit: int = DEFAULT_SUBSCRIBER_LIMIT
) -> AsyncIterator[Subscription]:
    """Receive every event published on ``channel`` from now on, until the block ends."""
    subscription = Subscription(current_worker()._inbox, channel, limit)
    try:
        yield subscription
    finally:
        subscription.close()


class Subscription(AsyncIterator[Event]):
    """What :func:`subscribe` yields; iterate it for :class:`Event` values."""

    # Never holds back the hub reader (Inbox.full): a lagging subscription is cut off instead.
    full = False

    def __init__(self, inbox: Inbox, channel: str, limit: int) -> None:
        if limit < 1:
            raise ValueError("a subscription's limit is at least 1")
        self.channel = channel
        self.limit = limit
        self._inbox = inbox
        self._queue: deque[Event] = deque()
        self._wakeup = trio.Event()
        self._cut_off = False
        self._closed = False
        self._since_checkpoint = 0
        if inbox.error is not None:
            raise inbox.error
        inbox.streams.add(self)

    @property
    def cut_off(self) -> bool:
        return self._cut_off

    @property
    def backlog(self) -> bool:
        return bool(self._queue)

    def _push(self, batch: list[Message], size: int) -> None:
        if self._cut_off:  # stays registered until closed: the inbox may be iterating its set
            return
        channel = self.channel
        queue = self._queue
        for message in batch:
            data = message.data
            if (
                type(data) is list
                and len(data) == 2
                and type(tag := data[0]) is CBORTag
                and tag.tag == TOPIC_TAG
                and tag.value == channel
            ):
                if len(queue) >= self.limit:
                    self._cut_off = True
                    break
                queue.append(Event(channel, data[1], message.sender, message.seq))
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        queue = self._queue
        if queue:
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                await trio.lowlevel.checkpoint()
            return queue.popleft()
        self._since_checkpoint = 0
        while not queue:
            if self._cut_off:
                raise SubscriberCutOff(
                    f"the subscription to {self.channel!r} fell {self.limit} events behind"
                    " and was cut off after the last event it received"
                )
            if self._closed:
                raise StopAsyncIteration
            if self._inbox.error is not None:
                raise self._inbox.error
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        return queue.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.streams.discard(self)
            self._wakeup.set()
