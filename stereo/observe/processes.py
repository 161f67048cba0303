"""Worker CPU and memory as this process measures them (psutil), by pid."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from .model import Figures


class ProcessMeter:
    """Keeps a psutil handle per live pid, so CPU % is over the time between two readings."""

    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}

    def figures(self, pids: Iterable[int]) -> dict[int, Figures]:
        """Figures of the pids still readable; handles of pids not asked for are dropped."""
        live = set(pids)
        for pid in set(self._handles) - live:
            del self._handles[pid]
        found: dict[int, Figures] = {}
        for pid in live:
            try:
                handle = self._handles.get(pid)
                first = handle is None
                if handle is None:
                    handle = self._handles[pid] = psutil.Process(pid)
                with handle.oneshot():
                    times = handle.cpu_times()
                    percent = handle.cpu_percent(None)
                    rss = int(handle.memory_info().rss)
            except psutil.Error:
                self._handles.pop(pid, None)
                continue
            found[pid] = Figures(
                cpu_seconds=times.user + times.system,
                rss=rss,
                cpu_percent=None if first else round(percent, 1),
            )
        return found
