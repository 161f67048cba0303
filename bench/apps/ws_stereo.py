"""Stereo's fan-out leg: ``stereo run bench.apps.ws_stereo:app -w 4``, the workers joined by
stereo's own broadcasts through the master."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from stereo.worker.current import current_worker

from .ws_fanout import make_app


class Event(NamedTuple):
    channel: str
    message: Any


class WorkerTopics:
    """``stereo.publish``/``stereo.subscribe``'s shape over ``current_worker()``'s broadcasts,
    until the topic API lands on main (then the app takes the ``stereo`` module itself)."""

    async def publish(self, channel: str, message: Any) -> None:
        await current_worker().broadcast([channel, message])

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Event]]:
        stream = current_worker().messages()
        try:
            yield (Event(*m.data) async for m in stream if m.data[0] == channel)
        finally:
            await stream.aclose()


app = make_app(WorkerTopics())
