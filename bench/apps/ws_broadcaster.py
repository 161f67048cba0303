"""The peer of stereo's fan-out leg: ``uvicorn bench.apps.ws_broadcaster:app --workers 4``, the
workers joined by encode/broadcaster over the local Redis server.

broadcaster 0.3.1's Redis backend loses every message with redis-py 5 and later: its
``subscribe`` sets the listener's ready event *before* awaiting ``pubsub.subscribe``, and redis-py
adds the channel to ``pubsub.channels`` only after the SUBSCRIBE command is written. The listener
task wakes during that write, finds ``pubsub.subscribed`` false, so ``pubsub.listen()`` ends at
once; it clears the event and waits for it forever (only a process's first subscriber sets it).
:class:`FixedRedisBackend` subscribes first and sets the event after, which is the whole fix.
The SUBSCRIBE may still be processed by Redis after the load generator's first publish; the
generator's probe barrier (wsload.py) covers that for every server alike.
"""

from __future__ import annotations

from broadcaster import Broadcast
from broadcaster._backends.redis import RedisBackend

from .ws_fanout import make_app

REDIS_URL = "redis://127.0.0.1:6379"


class FixedRedisBackend(RedisBackend):
    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._ready.set()


broadcast = Broadcast(backend=FixedRedisBackend(REDIS_URL))
app = make_app(broadcast, startup=broadcast.connect, shutdown=broadcast.disconnect)
