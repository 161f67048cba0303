"""The app of the costs workload: reports when it is up, then does nothing.

``ready`` carries the worker's pid (so the harness can SIGKILL it) and the CLOCK_MONOTONIC time at
which its ``serve`` began (so a respawn is timed to the moment the replacement runs app code, not
to when the harness happened to read the line).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import trio

from ._spec import emit


class Worker(Protocol):
    @property
    def id(self) -> int: ...


async def serve(worker: Worker) -> None:
    emit("ready", id=worker.id, pid=os.getpid(), t=time.monotonic_ns())
    await trio.sleep_forever()
