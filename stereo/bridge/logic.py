"""The broker bridge's decisions, with no event loop in them: what a BATCH becomes, what to say
and send while the broker is away (the backoff schedule, the RESET once past the bridge
timeout), what a Gap becomes, and which DELIVERs a read gives. The trio driver (Redis) and the
asyncio driver (NATS JetStream) only do the I/O around it, so both bridges behave alike.

Two loops of a driver share one :class:`BridgeLogic` (appending and reading), each running to
an await before the other runs again, so its state needs no lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from ..wire.bridge import decode_batch, encode_deliver
from ..wire.protocol import LARGEST_MESSAGE_SIZE, Kind, encode_map, max_body_size
from .broker import Batch, BrokerRefused, BrokerUnavailable, Entry, Gap
from .restamp import restamp

RECEIVE_SIZE = 256 * 1024
# Any frame the master sends fits: WELCOME, and a batch (one read of a worker's connection plus
# a largest broadcast under way); the limit is the master's own, LARGEST_MESSAGE_SIZE.
HUB_MAX_BODY = LARGEST_MESSAGE_SIZE + 2 * RECEIVE_SIZE
READ_BLOCK = 1.0  # seconds a read waits for entries before looking again
BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
HEARTBEAT = 1.0
# One broker call gives up after this long (or the bridge timeout, if shorter) and is retried.
BROKER_CALL_TIMEOUT = 5.0


def say(line: str) -> None:
    print(f"[bridge] {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Retry:
    """What a driver does after a broker call found the broker away: log ``notes``, send
    ``reset`` to the hub if there is one, sleep ``delay`` seconds, call again."""

    delay: float
    notes: tuple[str, ...] = ()
    reset: bytes | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    """A RESET for the hub, and the line saying why."""

    note: str
    frame: bytes


class BridgeLogic:
    def __init__(self, welcome: dict[str, Any]) -> None:
        self.hub_id = str(welcome["hub_id"])
        self.timeout = float(welcome["timeout"])
        # The global seq this hub reads next; None: start at the broker's tail (a new hub, or
        # one cut off by a RESET, whose workers restart at the tail anyway).
        self.next_seq: int | None = welcome.get("next_seq")
        # Each frame of an entry must be a whole BROADCAST under the hub's own limit.
        self.max_length = max_body_size(int(welcome["max_message_size"])) + 1
        # Since when each kind of call (appending, reading: a driver's ``call`` names) has
        # failed, on the driver's clock: one kind failing alone (an ACL that lets this hub read
        # but not append) is the broker away for this hub all the same.
        self._away_since: dict[str, float] = {}
        self._said: set[str] = set()  # the reasons logged during this outage, each said once
        self._reset_sent = False
        # Why the broker is away now, as the hub last heard it (None: it is not), and as it is.
        self._told: str | None = None
        self._error: str | None = None

    def batch(self, kind: int, body: bytes) -> Batch:
        """The entry to append for a frame from the master (only BATCHes come)."""
        if kind != Kind.BATCH:
            raise ProtocolError(f"the master sent {Kind(kind).name}, not BATCH")
        number, count, frames = decode_batch(body)
        return Batch(self.hub_id, number, count, frames)

    def unavailable(
        self,
        exc: BrokerUnavailable,
        attempt: int,
        now: float,
        started: float | None = None,
        call: str = "",
    ) -> Retry:
        """A broker call (the ``attempt``-th in a row of its kind ``call``, from 0) that began
        at ``started`` failed at ``now``. Past the timeout the hub is RESET once, and once the
        broker is back this hub starts at the tail: its workers were cut off, and what they
        missed is not theirs to read. Each distinct reason is logged once per outage.

        The broker is away from the start of the first call that failed, not from its failure:
        a call bounded by the timeout itself (a paused server, a cut link) fails only once the
        timeout has passed, and the RESET is due then, not a timeout later."""
        delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        reason = str(exc)
        self._error = reason
        notes: tuple[str, ...] = ()
        if reason not in self._said:
            self._said.add(reason)
            notes = (f"broker unavailable ({reason}); retrying",)
        since = self._away_since.setdefault(call, now if started is None else started)
        if now - since > self.timeout and not self._reset_sent:
            if isinstance(exc, BrokerRefused):
                why = f"the broker refused for over {self.timeout:g} s: {reason}"
            else:
                why = f"the broker was unreachable for over {self.timeout:g} s"
            reset = self._reset(why)
            return Retry(delay, (*notes, reset.note), reset.frame)
        return Retry(delay, notes)

    def available(self, call: str = "") -> str | None:
        """A broker call of kind ``call`` answered: the line to log if the broker was away
        (and no other kind of call still finds it so)."""
        if self._away_since.pop(call, None) is None or self._away_since:
            return None
        self._said.clear()
        self._error = None
        return "broker reachable again"

    def status(self) -> bytes | None:
        """A BRIDGE_STATUS for the hub if why the broker is away (or that it is not) changed
        since the hub last heard: the master shows it in ``status`` and ``stats``."""
        if self._error == self._told:
            return None
        self._told = self._error
        return encode_map(Kind.BRIDGE_STATUS, {"error": self._error})

    def gap(self, gap: Gap) -> Reset:
        """The broker's order has a hole here: RESET the hub, never skip, start at the tail."""
        return self._reset(f"the broker's order has a gap: {gap}")

    def deliveries(self, expected: int, entries: Sequence[Entry]) -> bytes:
        """The DELIVER frames for ``entries``, read from global seq ``expected`` on; nothing if
        the hub was RESET while the read was under way (the read belongs to the old position).
        The reader's position moves past them."""
        if self.next_seq != expected:
            return b""
        frames = []
        for entry in entries:
            restamped = restamp(entry.frames, entry.count, entry.first_seq, self.max_length)
            frames.append(encode_deliver(entry.count, entry.first_seq, restamped))
            self.next_seq = entry.last_seq + 1
        # A read that answered is the broker back: a later outage may RESET again.
        self._reset_sent = False
        return b"".join(frames)

    def _reset(self, reason: str) -> Reset:
        self._reset_sent = True
        self.next_seq = None
        return Reset(f"RESET: {reason}", encode_map(Kind.RESET, {"reason": reason}))
