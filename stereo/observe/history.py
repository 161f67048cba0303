"""The dashboard's recent past (pure): one point a second for the charts, rates from counters.

A point holds the hub's rates over the second before it, each job pool's jobs done per second
(with --pool), and each slot's CPU % and memory; the browser gets every point once it connects,
then one point a tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from .jobs import Key
from .model import Figures, current, pools, slots

POINTS = 300  # five minutes at one a second
RATES = ("broadcasts", "deliveries", "bytes_in", "bytes_out")


class History:
    def __init__(self, points: int = POINTS) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self._last: tuple[float, dict[str, int], dict[str, int]] | None = None

    def add(
        self,
        snapshot: Mapping[str, Any],
        figures: Mapping[int, Figures],
        wall: float,
        jobs_done: Mapping[Key, int] | None = None,
    ) -> dict[str, Any]:
        """The point for this snapshot, appended; ``jobs_done`` is a JobTotals reading of it.
        Rates are 0 on the first one (and when the counters went back: another master)."""
        hub = snapshot["hub"]
        counters = {name: int(hub[name]) for name in RATES}
        done = {name: 0 for name in pools(snapshot)}
        for (name, _), count in (jobs_done or {}).items():
            done[name] = done.get(name, 0) + count
        now = float(snapshot["now"])
        rates = dict.fromkeys(RATES, 0.0)
        jobs = dict.fromkeys(done, 0.0)
        if self._last is not None and now > self._last[0]:
            span = now - self._last[0]
            rates = _rates(counters, self._last[1], span)
            jobs = _rates(done, self._last[2], span)
        self._last = (now, counters, done)
        workers: dict[str, dict[str, Any]] = {}
        for slot in slots(snapshot):
            proc = current(slot)
            seen = figures.get(proc["pid"]) if proc is not None else None
            if seen is not None:
                workers[str(slot["id"])] = {
                    "cpu": seen.cpu_percent,
                    "rss": seen.rss,
                    "pool": slot.get("pool"),
                }
        point = {"t": round(wall, 3), "rates": rates, "jobs": jobs, "workers": workers}
        self.points.append(point)
        return point


def _rates(counters: Mapping[str, int], before: Mapping[str, int], span: float) -> dict[str, float]:
    """Per second since ``before``; all 0 if any went back (counted again from 0 since)."""
    if any(counters[n] < before.get(n, 0) for n in counters):
        return dict.fromkeys(counters, 0.0)
    return {n: round((counters[n] - before.get(n, 0)) / span, 1) for n in counters}
