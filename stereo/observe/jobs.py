"""Jobs done per job pool slot, kept from going back when the slot's process is replaced (pure).

A pool process reports its own count (``jobs.done`` in the snapshot, every heartbeat), which
starts at 0 in each new process. A Prometheus counter per slot must not go back, so this adds
up, for each (pool, slot), the last count read of each of its processes that has gone, plus the
counts of those alive now. A process is known by pid and start time (a pid may be reused).

What it cannot see: jobs a process did after the last reading before it went (its last
heartbeat, or this observer's last snapshot of it), and processes that came and went between
two readings or before this observer started. A new observer starts from the processes alive,
which Prometheus reads as a counter reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, int]  # (pool, slot id)
Process = tuple[int, float]  # (pid, started_wall)


class JobTotals:
    def __init__(self) -> None:
        self._alive: dict[Key, dict[Process, int]] = {}  # last count read of each live process
        self._gone: dict[Key, int] = {}  # counts of processes no longer listed

    def update(self, snapshot: Mapping[str, Any]) -> dict[Key, int]:
        """Read a snapshot (the newest yet: readings must come in order); every (pool, slot)
        seen so far, removed ones included, with its jobs done."""
        alive: dict[Key, dict[Process, int]] = {}
        for slot in snapshot["supervisor"]["slots"]:
            if slot.get("pool") is None:
                continue
            key = (slot["pool"], slot["id"])
            before = self._alive.get(key, {})
            counts = alive.setdefault(key, {})
            for proc in slot["processes"]:
                ident = (proc["pid"], proc["started_wall"])
                done = (proc.get("jobs") or {}).get("done") or 0
                counts[ident] = max(done, before.get(ident, 0))
        for key, counts in self._alive.items():
            still = alive.get(key, {})
            ended = sum(done for ident, done in counts.items() if ident not in still)
            if ended:
                self._gone[key] = self._gone.get(key, 0) + ended
        self._alive = alive
        return {
            key: self._gone.get(key, 0) + sum(alive.get(key, {}).values())
            for key in self._gone.keys() | alive.keys()
        }
