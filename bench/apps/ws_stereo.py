"""Stereo's fan-out leg: ``stereo run bench.apps.ws_stereo:app -w 4``, the workers joined by
stereo's topics (``stereo.publish`` / ``stereo.subscribe``) through the master.

A stereo subscription that falls its ``limit`` of events behind is cut off (broadcaster's queues
have no bound). The harness lifts the limit to the leg's message count
(``$STEREO_BENCH_SUBSCRIBER_LIMIT``), as the relay legs lift ``--outbox-limit`` to the whole
stream: a full-speed burst measures throughput, not this safety net.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager

import stereo
from stereo.worker.topics import DEFAULT_SUBSCRIBER_LIMIT, Subscription

from ._spec import SUBSCRIBER_LIMIT_ENV
from .ws_fanout import make_app


class StereoTopics:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.publish = stereo.publish

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        return stereo.subscribe(channel, limit=self.limit)


app = make_app(StereoTopics(int(os.environ.get(SUBSCRIBER_LIMIT_ENV, DEFAULT_SUBSCRIBER_LIMIT))))
