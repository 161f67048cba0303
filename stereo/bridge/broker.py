"""What a broker adapter offers the bridge: append a hub's batch as one entry, read entries back
in the broker's order with every gap visible. Pure types; the adapters do the I/O.

Every frame appended gets one global consecutive sequence number (the ``msg.seq`` every worker
on every hub sees); an entry is one batch: ``count`` frames numbered ``first_seq`` to
``first_seq + count - 1``. A reader knows the next number it expects, so a missing entry (trimmed
away, lost in a failover) is arithmetic, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import StereoError


@dataclass(frozen=True, slots=True)
class Batch:
    """What a hub hands its bridge: the run of BROADCAST frames it read in one go."""

    hub_id: str  # unique per hub (a uuid drawn at the master's start)
    number: int  # the hub's batch counter, from 1: the append is idempotent per (hub_id, number)
    count: int  # frames in ``frames``
    frames: bytes  # BROADCAST frames as the hub stamped them (local seq, local sender)


@dataclass(frozen=True, slots=True)
class Entry:
    """One batch as the broker ordered it."""

    first_seq: int  # the global seq of its first frame
    count: int
    hub_id: str
    number: int
    frames: bytes

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


class Gap(StereoError):
    """The broker's order has a hole where this reader stands (trimmed past the retention, a
    stream recreated, IDs going backwards after a failover): the hub must RESET, never skip."""

    def __init__(self, expected: int, found: int | None, reason: str) -> None:
        super().__init__(f"{reason}: expected seq {expected}, found {found}")
        self.expected = expected
        self.found = found
        self.reason = reason


class BrokerUnavailable(StereoError):
    """The broker cannot be reached now (refused, reset, timed out): retry with backoff."""


class BrokerRefused(BrokerUnavailable):
    """The broker answered with an error (a key of another type, no permission, out of memory,
    a read-only replica): retried like an unreachable broker, its words shown to the operator."""


def check_follows(expected: int, entry: Entry) -> None:
    """Raise Gap unless ``entry`` starts exactly at ``expected``."""
    if entry.first_seq != expected:
        reason = "entries went backwards" if entry.first_seq < expected else "entries are missing"
        raise Gap(expected, entry.first_seq, reason)


class Broker(Protocol):
    """An adapter (Redis Streams, NATS JetStream). Methods are async in the adapter's own event
    loop (trio for Redis, asyncio for NATS): the bridge process runs one or the other."""

    async def append(self, batch: Batch) -> int | None:
        """Append ``batch`` as one entry; its first global seq, or None if that (hub_id, number)
        was appended before (a resend after a bridge restart). Raises BrokerUnavailable."""
        ...

    async def read(self, expected: int, block: float) -> list[Entry]:
        """Entries from global seq ``expected`` on, in order (waiting up to ``block`` seconds
        for the first; [] if none came). Raises Gap if ``expected`` is no longer there, or the
        entries do not follow on; BrokerUnavailable."""
        ...

    async def tail(self) -> int:
        """The global seq the next appended frame will get (where a fresh hub starts)."""
        ...

    async def aclose(self) -> None: ...
