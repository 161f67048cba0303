"""The stereo leg of the serving workload.

Run as ``stereo run bench.apps.stereo_http:serve --bind ...``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Protocol

import trio

from ._spec import emit
from .http_handler import Counter, handle


class Worker(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def listeners(self) -> list[trio.abc.Listener[Any]]: ...


async def serve(worker: Worker) -> None:
    counter = Counter(worker.id)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(counter.write_periodically)
        await nursery.start(
            partial(trio.serve_listeners, partial(handle, counter=counter), worker.listeners)
        )
        emit("ready", id=worker.id, pid=os.getpid())
