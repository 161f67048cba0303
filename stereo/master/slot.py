"""A worker slot: a numbered seat (worker id 1..N) that outlives its processes.

It holds the slot's state machine (:class:`~stereo.master.lifecycle.SlotLifecycle`), its
processes, its own listening sockets (--reuse-port) and the event that wakes its task in the
supervisor when an operation changed its state.
"""

from __future__ import annotations

import heapq
import socket
from collections.abc import Iterable, Mapping

import trio

from ..errors import TooManyWorkers
from ..snapshot import SlotSnapshot
from .lifecycle import SlotLifecycle, SlotState
from .process import WorkerProcess


class Slot:
    def __init__(self, slot_id: int, life: SlotLifecycle, pool: str | None = None) -> None:
        self.id = slot_id
        self.life = life
        self.pool = pool  # the job pool's name for a pool process's slot (docs/pool.md)
        self.current: WorkerProcess | None = None
        self.processes: list[WorkerProcess] = []  # alive: current plus any still draining
        self.restarts = 0
        self.restart_reasons: dict[str, int] = {}  # restarts by RESTART_REASONS label
        self.last_exit: str | None = None
        self.failed_reason: str | None = None
        self._nudge = trio.Event()
        # --reuse-port: this slot's own listening sockets, kept across its workers' restarts so
        # connections queued meanwhile wait for the replacement instead of being refused.
        self.own_sockets: list[socket.socket] = []

    def count_restart(self, reason: str) -> None:
        self.restarts += 1
        self.restart_reasons[reason] = self.restart_reasons.get(reason, 0) + 1

    @property
    def state(self) -> SlotState:
        return self.life.state

    @property
    def retiring(self) -> bool:
        return self.life.retiring

    def nudge(self) -> None:
        """Wake the slot's task: its state changed under it."""
        self._nudge.set()

    def clear_nudge(self) -> None:
        """The slot's task is about to read the state afresh: what woke it is seen."""
        if self._nudge.is_set():
            self._nudge = trio.Event()

    async def wait_nudge(self) -> None:
        await self._nudge.wait()

    def close_own_sockets(self) -> None:
        """Stop the kernel routing new connections here (the worker's copy drains)."""
        for sock in self.own_sockets:
            sock.close()
        self.own_sockets = []


class SlotIds:
    """Worker ids 1..limit, each new slot taking the lowest free one, in O(log n) per id: ids
    below ``_next`` that were released wait in a heap; every id from ``_next`` on is free. (A scan
    for the lowest free id made adding n slots cost n^2 / 2 steps, enough to freeze the master.)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit  # --max-workers
        self._next = 1
        self._released: list[int] = []

    @property
    def in_use(self) -> int:
        return self._next - 1 - len(self._released)

    def take(self, count: int, draining: int = 0) -> list[int]:
        """``count`` ids, lowest first; TooManyWorkers, taking none, past the limit (``draining``:
        how many of those in use belong to slots being removed, for the message)."""
        if count < 0:
            raise ValueError(f"cannot take {count} ids")
        total = self.in_use + count
        if total > self.limit:
            raise TooManyWorkers(
                f"{total} workers would be over the limit of {self.limit} (--max-workers)"
                + (f"; {draining} of them are still draining" if draining else "")
            )
        ids = [heapq.heappop(self._released) for _ in range(min(count, len(self._released)))]
        fresh = count - len(ids)
        ids += range(self._next, self._next + fresh)
        self._next += fresh
        return ids

    def release(self, slot_id: int) -> None:
        """``slot_id`` (taken, not released since) is free again."""
        heapq.heappush(self._released, slot_id)


def slot_snapshot(slot_id: int, slot: Slot | None, procs: list[WorkerProcess]) -> SlotSnapshot:
    """A slot and its live processes as plain data; ``slot`` is None once it was removed
    while a process of it still drains."""
    current = slot.current if slot is not None else None
    return SlotSnapshot(
        id=slot_id,
        state=slot.state.value if slot is not None else SlotState.REMOVED.value,
        restarts=slot.restarts if slot is not None else 0,
        last_exit=slot.last_exit if slot is not None else None,
        failed_reason=slot.failed_reason if slot is not None else None,
        quick_failures=slot.life.crashes if slot is not None else 0,
        setbacks=slot.life.setbacks if slot is not None else 0,
        processes=tuple(p.snapshot(p is current) for p in procs),
        pool=slot.pool if slot is not None else None,
        restart_reasons=tuple(sorted(slot.restart_reasons.items())) if slot is not None else (),
    )


def only_pools_left(slots: Iterable[Slot], live: Iterable[WorkerProcess]) -> bool:
    """No worker slot and no worker process is left, only the job pool's: time to stop it
    (draining workers may run jobs in it until they are gone)."""
    return all(slot.pool is not None for slot in slots) and all(
        proc.peer is not None and proc.peer.pool is not None for proc in live
    )


def pool_of(slots: Mapping[int, Slot], slot_id: int) -> str | None:
    """The job pool a slot serves (None: a worker slot, or gone)."""
    slot = slots.get(slot_id)
    return slot.pool if slot is not None else None
