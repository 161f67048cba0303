"""What the control commands measure themselves (psutil): memory of any process on demand, and
figures that need two readings: CPU % per process and the hub's counters as rates per second.

:meth:`Sampler.sample` takes a reading from a :class:`~stereo.snapshot.MasterSnapshot`; the
control server calls it once a second while a client is connected, so the figures are over the
last second (or over the whole quiet spell before a first client, which is still true).
"""

from __future__ import annotations

from typing import Any

import psutil

from ..snapshot import MasterSnapshot

#: The rates in ``stats`` (docs/console.md); :func:`_counters` gives what each is a rate of.
RATE_NAMES = (
    "broadcasts_per_s",
    "deliveries_per_s",
    "bytes_in_per_s",
    "bytes_out_per_s",
    "respawns_per_s",
)


def _counters(snapshot: MasterSnapshot) -> dict[str, int]:
    hub = snapshot.hub
    counts = (hub.broadcasts, hub.deliveries, hub.bytes_in, hub.bytes_out)
    return dict(zip(RATE_NAMES, (*counts, snapshot.supervisor.respawns), strict=True))


class Sampler:
    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}
        self._cpu: dict[int, float] = {}
        self._last: tuple[float, dict[str, int]] | None = None  # (clock, counters)
        self._self = psutil.Process()
        #: per second, over the time between the last two samples
        self.rates: dict[str, float] = dict.fromkeys(RATE_NAMES, 0.0)
        self.master_cpu = 0.0

    def sample(self, snapshot: MasterSnapshot) -> None:
        """Update rates and CPU percentages over the time since the previous call."""
        now = (snapshot.now, _counters(snapshot))
        last, self._last = self._last, now
        if last is not None and now[0] > last[0]:
            span = now[0] - last[0]
            self.rates = {name: (now[1][name] - last[1][name]) / span for name in RATE_NAMES}
        live = {proc.pid for slot in snapshot.supervisor.slots for proc in slot.processes}
        for pid in list(self._handles):
            if pid not in live:
                del self._handles[pid]
                self._cpu.pop(pid, None)
        for pid in live:
            handle = self._handle(pid)
            if handle is not None:
                try:
                    self._cpu[pid] = handle.cpu_percent(None)
                except psutil.Error:
                    self._cpu.pop(pid, None)
        try:
            self.master_cpu = self._self.cpu_percent(None)
        except psutil.Error:
            pass

    def _handle(self, pid: int) -> psutil.Process | None:
        handle = self._handles.get(pid)
        if handle is None:
            try:
                handle = psutil.Process(pid)
                handle.cpu_percent(None)  # the first call only starts the measurement
            except psutil.Error:
                return None
            self._handles[pid] = handle
        return handle

    def rss(self, pid: int) -> int | None:
        handle = self._handle(pid)
        if handle is None:
            return None
        try:
            return int(handle.memory_info().rss)
        except psutil.Error:
            return None

    def cpu(self, pid: int) -> float | None:
        """CPU % over the last sample (100 = one core); None before a second sample."""
        value = self._cpu.get(pid)
        return None if value is None else round(value, 1)

    def details(self, pid: int) -> dict[str, Any]:
        """``threads``, ``open_files`` and ``cmdline`` of a process; empty if unreadable."""
        handle = self._handle(pid)
        if handle is None:
            return {}
        try:
            with handle.oneshot():
                return {
                    "threads": handle.num_threads(),
                    "open_files": handle.num_fds(),
                    "cmdline": handle.cmdline(),
                }
        except psutil.Error:
            return {}
