"""The dashboard's recent past (pure): one point a second for the charts, rates from counters.

A point holds the hub's rates over the second before it and each slot's CPU % and memory; the
browser gets every point once it connects, then one point a tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from .model import Figures, current, slots

POINTS = 300  # five minutes at one a second
RATES = ("broadcasts", "deliveries", "bytes_in", "bytes_out")


class History:
    def __init__(self, points: int = POINTS) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self._last: tuple[float, dict[str, int]] | None = None

    def add(
        self, snapshot: Mapping[str, Any], figures: Mapping[int, Figures], wall: float
    ) -> dict[str, Any]:
        """The point for this snapshot, appended; rates are 0 on the first one (and when the
        master's counters went back: another master)."""
        hub = snapshot["hub"]
        counters = {name: int(hub[name]) for name in RATES}
        now = float(snapshot["now"])
        rates = dict.fromkeys(RATES, 0.0)
        if self._last is not None and now > self._last[0]:
            span = now - self._last[0]
            before = self._last[1]
            if all(counters[n] >= before[n] for n in RATES):
                rates = {n: round((counters[n] - before[n]) / span, 1) for n in RATES}
        self._last = (now, counters)
        workers: dict[str, dict[str, Any]] = {}
        for slot in slots(snapshot):
            proc = current(slot)
            seen = figures.get(proc["pid"]) if proc is not None else None
            if seen is not None:
                workers[str(slot["id"])] = {"cpu": seen.cpu_percent, "rss": seen.rss}
        point = {"t": round(wall, 3), "rates": rates, "workers": workers}
        self.points.append(point)
        return point
