"""Worker and slot lifecycles, as transition tables (the only place they are defined).

Rules:
- A *process* is one OS process in a slot. It is STARTING until it sends READY, DRAINING once the
  master asked it to stop, EXITED when the OS reaped it. EXITED is final.
- A *slot* is a numbered seat (worker id 1..N) that outlives its processes. It is RUNNING while it
  has a current process, BACKOFF while it waits to respawn after a crash, FAILED when it gave up
  (the app cannot load, or it crashed too often in a row) until an operator restarts it, and
  REMOVED when it is retired. REMOVED is final.
- Every change goes through ``advance``; a transition not in the table is a bug and raises.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, TypeVar


class ProcessState(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"


class SlotState(Enum):
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    REMOVED = "removed"


PROCESS_TRANSITIONS: Final[dict[ProcessState, frozenset[ProcessState]]] = {
    ProcessState.STARTING: frozenset(
        {ProcessState.READY, ProcessState.DRAINING, ProcessState.EXITED}
    ),
    ProcessState.READY: frozenset({ProcessState.DRAINING, ProcessState.EXITED}),
    ProcessState.DRAINING: frozenset({ProcessState.EXITED}),
    ProcessState.EXITED: frozenset(),
}

SLOT_TRANSITIONS: Final[dict[SlotState, frozenset[SlotState]]] = {
    SlotState.RUNNING: frozenset(
        {SlotState.RUNNING, SlotState.BACKOFF, SlotState.FAILED, SlotState.REMOVED}
    ),
    SlotState.BACKOFF: frozenset({SlotState.RUNNING, SlotState.REMOVED}),
    SlotState.FAILED: frozenset({SlotState.RUNNING, SlotState.REMOVED}),
    SlotState.REMOVED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the tables above do not allow: a bug in stereo, never an input error."""


S = TypeVar("S", ProcessState, SlotState)


def advance(current: S, new: S) -> S:
    table: dict[S, frozenset[S]] = (
        PROCESS_TRANSITIONS if isinstance(current, ProcessState) else SLOT_TRANSITIONS  # type: ignore[assignment]
    )
    if new not in table[current]:
        raise IllegalTransition(f"{type(current).__name__}: {current.value} -> {new.value}")
    return new


class Backoff:
    """Delay before respawning after consecutive quick failures: capped exponential, jittered.

    ``failures`` counts crashes in a row that happened within ``quick`` seconds of a start; a
    worker that stayed up longer resets it. After ``limit`` such crashes the slot fails.
    """

    def __init__(
        self, base: float = 0.1, cap: float = 10.0, limit: int = 5, quick: float = 2.0
    ) -> None:
        self.base = base
        self.cap = cap
        self.limit = limit
        self.quick = quick
        self.failures = 0

    def record_exit(self, uptime: float, crashed: bool) -> None:
        if crashed and uptime < self.quick:
            self.failures += 1
        else:
            self.failures = 0

    @property
    def exhausted(self) -> bool:
        return self.failures >= self.limit

    def delay(self, jitter: float) -> float:
        """Seconds to wait before the next start; ``jitter`` is uniform in [0, 1)."""
        if self.failures == 0:
            return 0.0
        raw: float = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        # Full jitter on the upper half keeps slots that crashed together from retrying together.
        return raw * (0.5 + 0.5 * jitter)

    def reset(self) -> None:
        self.failures = 0
