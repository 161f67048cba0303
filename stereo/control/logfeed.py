"""The ``logs`` control command, the master's side: lines from the master's log ring
(:class:`stereo.logs.LogRing`), at once or by long poll, for ``stereo logs``, ``stereo ctl logs``
and the console (docs/logging.md, docs/protocol.md).

A long poll holds nothing for its reader: the lines stay in the ring, shared, and the reply is
built when they are there; a reader that falls behind by more than the ring holds is told how
many lines it missed.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import trio

from ..errors import ControlError
from ..logs import RING_LINES, LogSlice

#: Lines by default, and the longest a request may wait for new ones (a long poll ends well
#: within the client's request timeout).
DEFAULT_LOG_LINES = 100
MAX_LOG_WAIT = 30.0


class LogSource(Protocol):
    """What ``logs`` needs of a running master."""

    def read_logs(self, after: int | None, ids: list[int] | None, limit: int) -> LogSlice:
        """Up to ``limit`` lines of the log ring after cursor ``after`` (None: the last ones),
        of workers ``ids`` (0: the master; None: everyone)."""
        ...

    async def wait_logs(self, after: int) -> None:
        """Return once the ring holds a line after cursor ``after``."""
        ...


async def logs(
    source: LogSource,
    after: int | None = None,
    ids: list[int] | None = None,
    limit: int = DEFAULT_LOG_LINES,
    wait: float = 0.0,
) -> dict[str, Any]:
    """Lines from the master's log ring (docs/logging.md): the last ``limit`` ones, or those
    after cursor ``after``. With ``wait``, a request that finds none waits up to that many
    seconds for one (a long poll: ``stereo logs -f`` asks again with the ``next`` it got).
    ``missed``: lines that left the ring before this reader got to them."""
    if not 1 <= limit <= RING_LINES:
        raise ControlError(f"logs: the number of lines must be from 1 to {RING_LINES}")
    if not 0 <= wait <= MAX_LOG_WAIT:
        raise ControlError(f"logs: the wait must be from 0 to {MAX_LOG_WAIT:g} seconds")
    if after is not None and after < 0:
        raise ControlError("logs: the cursor cannot be negative")
    got = source.read_logs(after, ids, limit)
    missed = got.missed
    if after is not None and wait > 0:
        with trio.move_on_after(wait):
            while not got.lines:
                await source.wait_logs(got.next)
                got = source.read_logs(got.next, ids, limit)
                missed += got.missed
    return {"lines": [line.as_dict() for line in got.lines], "next": got.next, "missed": missed}


def seconds_arg(args: dict[str, Any], key: str) -> float:
    value = args.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ControlError(f"argument {key!r} must be a number of seconds")
    return float(value)
