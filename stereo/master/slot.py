"""A worker slot: a numbered seat (worker id 1..N) that outlives its processes.

It holds the slot's state machine (:class:`~stereo.master.lifecycle.SlotLifecycle`), its
processes, its own listening sockets (--reuse-port) and the event that wakes its task in the
supervisor when an operation changed its state.
"""

from __future__ import annotations

import socket

import trio

from ..snapshot import SlotSnapshot
from .lifecycle import SlotLifecycle, SlotState
from .process import WorkerProcess


class Slot:
    def __init__(self, slot_id: int, life: SlotLifecycle) -> None:
        self.id = slot_id
        self.life = life
        self.current: WorkerProcess | None = None
        self.processes: list[WorkerProcess] = []  # alive: current plus any still draining
        self.restarts = 0
        self.last_exit: str | None = None
        self.failed_reason: str | None = None
        self._nudge = trio.Event()
        # --reuse-port: this slot's own listening sockets, kept across its workers' restarts so
        # connections queued meanwhile wait for the replacement instead of being refused.
        self.own_sockets: list[socket.socket] = []

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


def slot_snapshot(slot_id: int, slot: Slot | None, procs: list[WorkerProcess]) -> SlotSnapshot:
    """A slot and its live processes as plain data; ``slot`` is None once it was removed
    while a process of it still drains."""
    current = slot.current if slot is not None else None
    return SlotSnapshot(
        id=slot_id,
        state=slot.state.value if slot is not None else SlotState.REMOVED.value,
        retiring=slot.retiring if slot is not None else True,
        restarts=slot.restarts if slot is not None else 0,
        last_exit=slot.last_exit if slot is not None else None,
        failed_reason=slot.failed_reason if slot is not None else None,
        quick_failures=slot.life.crashes if slot is not None else 0,
        setbacks=slot.life.setbacks if slot is not None else 0,
        processes=tuple(p.snapshot(p is current) for p in procs),
    )
