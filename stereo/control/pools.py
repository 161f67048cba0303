"""The job pool in the control plane (docs/pool.md): its fields in `status` rows, the `pool`
argument of add/remove/scale, and the status table's pool groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ControlError
from ..snapshot import MasterSnapshot, ProcessSnapshot, SlotSnapshot


def pool_fields(slot: SlotSnapshot, proc: ProcessSnapshot) -> dict[str, Any]:
    """A status row's job pool columns: its pool (None: a worker), and a pool process's jobs
    as it last reported them."""
    jobs = proc.jobs
    return {
        "pool": slot.pool,
        "jobs_queued": None if jobs is None else jobs.queued,
        "jobs_done": None if jobs is None else jobs.done,
    }


def arg_pool(args: dict[str, Any]) -> str | None:
    value = args.get("pool")
    if value is not None and not isinstance(value, str):
        raise ControlError("argument 'pool' must be a pool's name")
    return value


def check_pool(snap: MasterSnapshot, command: str, pool: str | None) -> str | None:
    """``pool`` unless the master runs no job pool of that name (--pool)."""
    if pool is not None and pool not in snap.supervisor.pools:
        known = ", ".join(snap.supervisor.pools) or "none (--pool)"
        raise ControlError(f"{command}: there is no job pool {pool!r} (pools: {known})")
    return pool


def format_grouped(
    rows: list[dict[str, Any]], format_rows: Callable[[list[dict[str, Any]]], str]
) -> str:
    """The workers' table, then one table per job pool with its queue depth and jobs done."""
    workers = [row for row in rows if row.get("pool") is None]
    parts = [format_rows(workers)] if workers or len(workers) == len(rows) else []
    pools: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("pool") is not None:
            pools.setdefault(row["pool"], []).append(row)
    for name, members in pools.items():
        queued = sum(row["jobs_queued"] or 0 for row in members)
        done = sum(row["jobs_done"] or 0 for row in members)
        lines = format_rows(members).splitlines()
        per = [f"{row['jobs_queued'] or 0:>6}  {row['jobs_done'] or 0:>8}" for row in members]
        lines = [f"{lines[0]}  QUEUED      DONE"] + [
            f"{line}  {extra}" for line, extra in zip(lines[1:], per, strict=True)
        ]
        parts.append(f"pool {name}: {queued} queued, {done} done\n" + "\n".join(lines))
    return "\n\n".join(parts)
