"""What the exporter and the dashboard read out of a master's snapshot (pure).

The snapshot arrives as plain data (the ``snapshot`` control command: ``dataclasses.asdict`` of
:class:`stereo.snapshot.MasterSnapshot`), so these functions take dicts; each process's CPU and
memory come from :class:`Figures`, measured by this process, not by the master.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: The lifecycle states stereo_workers{state} always reports (0 when none), for the workers and
#: each job pool: a process is counted by its process state, a slot without one by its slot's.
WORKER_STATES = ("starting", "ready", "draining", "stopped", "backoff", "failed")


@dataclass(frozen=True, slots=True)
class Figures:
    """One process as psutil sees it."""

    cpu_seconds: float  # user + system, since it started
    rss: int
    cpu_percent: float | None  # over the last sample; None before a second one


def role(slot: Mapping[str, Any]) -> str:
    """``worker`` (serves the app) or ``pool`` (a job pool's process, docs/pool.md)."""
    return "worker" if slot.get("pool") is None else "pool"


def pools(snapshot: Mapping[str, Any]) -> list[str]:
    """The job pools' names (--pool), in the master's order; a pool may have no slot."""
    return list(snapshot["supervisor"].get("pools", ()))


def slots(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The master's slots, those removed but still draining left out."""
    return [s for s in snapshot["supervisor"]["slots"] if s["state"] != "removed"]


def worker_slots(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The slots that serve the app (no job pool's)."""
    return [s for s in slots(snapshot) if s.get("pool") is None]


def current(slot: Mapping[str, Any]) -> dict[str, Any] | None:
    """The slot's current process (a draining predecessor is not)."""
    return next((p for p in slot["processes"] if p["current"]), None)


def processes(snapshot: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(slot, process) for every live process, a slot mid-restart twice."""
    for slot in snapshot["supervisor"]["slots"]:
        for proc in slot["processes"]:
            yield slot, proc


def ready_workers(snapshot: Mapping[str, Any]) -> int:
    """Worker slots whose current process is ready to serve (pool processes serve no one)."""
    return sum(
        1
        for slot in worker_slots(snapshot)
        if (p := current(slot)) is not None and p["state"] == "ready"
    )


def state_counts(snapshot: Mapping[str, Any], pool: str | None = None) -> dict[str, int]:
    """Processes (and idle slots) by state, of the workers or of the job pool ``pool``."""
    counts = dict.fromkeys(WORKER_STATES, 0)
    for slot in snapshot["supervisor"]["slots"]:
        if slot.get("pool") != pool or (slot["state"] == "removed" and not slot["processes"]):
            continue
        # A running slot between a process and the next one is starting it.
        idle = "starting" if slot["state"] == "running" else slot["state"]
        states = [p["state"] for p in slot["processes"]] or [idle]
        for state in states:
            counts[state] = counts.get(state, 0) + 1
    return counts


def health(snapshot: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(healthy, body) for /healthz: healthy while at least one worker is ready."""
    ready = ready_workers(snapshot)
    body = {
        "status": "ok" if ready else "unavailable",
        "ready": ready,
        "workers": len(worker_slots(snapshot)),
        "stopping": snapshot["supervisor"]["stopping"],
    }
    return ready > 0, body


def _rows(
    slot: Mapping[str, Any], now: float, figures: Mapping[int, Figures]
) -> list[dict[str, Any]]:
    """A slot's table rows: one per process (a slot mid-restart has two), or one if it has none."""
    base = {"slot": slot["id"], "restarts": slot["restarts"], "last_exit": slot["last_exit"]}
    rows: list[dict[str, Any]] = []
    if not slot["processes"] and slot["state"] != "removed":
        rows.append({**base, "pid": None, "state": slot["state"], "current": False})
    for proc in slot["processes"]:
        hub = proc["hub"]
        seen = figures.get(proc["pid"])
        jobs = proc.get("jobs") or {}
        rows.append(
            {
                **base,
                "pid": proc["pid"],
                "state": proc["state"],
                "current": proc["current"],
                "uptime": round(now - proc["started_at"], 1),
                "rss": seen.rss if seen else None,
                "cpu_percent": seen.cpu_percent if seen else None,
                "messages_in": hub["messages_in"],
                "messages_out": hub["messages_out"],
                "outbox_bytes": hub["outbox_bytes"],
                "jobs_queued": jobs.get("queued"),
                "jobs_done": jobs.get("done"),
            }
        )
    return rows


def worker_rows(
    snapshot: Mapping[str, Any], figures: Mapping[int, Figures]
) -> list[dict[str, Any]]:
    """The dashboard's worker table (the job pools' processes are in their own sections)."""
    return [
        row
        for slot in snapshot["supervisor"]["slots"]
        if slot.get("pool") is None
        for row in _rows(slot, snapshot["now"], figures)
    ]


def pool_sections(
    snapshot: Mapping[str, Any],
    figures: Mapping[int, Figures],
    jobs_done: Mapping[tuple[str, int], int],
) -> list[dict[str, Any]]:
    """The dashboard's job pool sections, one per pool (none without --pool): its processes'
    rows, the jobs queued in them now, and ``jobs_done`` (a JobTotals reading) summed."""
    sections = []
    for name in pools(snapshot):
        members = [s for s in snapshot["supervisor"]["slots"] if s.get("pool") == name]
        rows = [row for slot in members for row in _rows(slot, snapshot["now"], figures)]
        sections.append(
            {
                "name": name,
                "processes": rows,
                "ready": sum(1 for row in rows if row["current"] and row["state"] == "ready"),
                "queued": sum(row.get("jobs_queued") or 0 for row in rows),
                "done": sum(n for (pool, _), n in jobs_done.items() if pool == name),
            }
        )
    return sections
