"""Control commands, the master's side: plain functions from a running master to plain data.

Nothing here knows about sockets or terminals. The control server (:mod:`stereo.control.server`)
decodes a request, calls :func:`execute`, and encodes whatever comes back; the console and
``stereo ctl`` turn a typed line into a request (:mod:`stereo.control.syntax`) and render the
result (:mod:`stereo.control.render`). Arguments come from any program, so :data:`HANDLERS`
checks their types again. Every result is made of dicts, lists, strings, numbers, booleans and
None, so it travels as CBOR and prints as JSON (the field names are documented in docs/console.md
and kept stable for scripts).

An operator's mistake (unknown worker, bad signal name...) raises :class:`ControlError` with a
sentence meant for them; anything else escaping from here is a bug in stereo.
"""

from __future__ import annotations

import dataclasses
import inspect as _inspect
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ControlError, StereoError, TooManyWorkers
from ..snapshot import MasterSnapshot, ProcessSnapshot, SlotSnapshot
from ..wire.control import parse_signal
from ..wire.protocol import encode_cbor
from .logfeed import DEFAULT_LOG_LINES, LogSource, logs, seconds_arg
from .pools import arg_pool, check_pool, pool_fields
from .sampler import Sampler


class Target(LogSource, Protocol):
    """What the commands need of a running master, and all they may do to it. Reading goes
    through :meth:`snapshot` (plain data); each action returns once it has been set in motion."""

    def snapshot(self) -> MasterSnapshot: ...

    def add(self, count: int, pool: str | None = None) -> list[int]:
        """Start ``count`` workers in new slots (lowest free ids); returns their ids. Raises
        TooManyWorkers, starting none, past --max-workers."""
        ...

    def remove(self, slot_ids: list[int]) -> list[int]:
        """Retire slots gracefully (drain, not replaced); returns those it retired."""
        ...

    def highest_slots(self, count: int, pool: str | None = None) -> list[int]:
        """The ``count`` highest ids of slots not being removed, highest first."""
        ...

    def scale(self, workers: int, pool: str | None = None) -> tuple[list[int], list[int]]:
        """Add or remove slots (of the job pool ``pool``) until there are ``workers``; returns
        (added, removed). Raises TooManyWorkers, changing nothing, past --max-workers."""
        ...

    async def restart(self, slot_ids: list[int] | None) -> list[int]:
        """Rolling restart (None: every slot); returns the ids restarted."""
        ...

    def kill(self, slot_id: int, signum: int) -> int | None:
        """Signal the slot's current process; its pid, or None when it has none."""
        ...

    def broadcast(self, payload: bytes) -> int:
        """Relay a CBOR-encoded value with sender 0; its sequence number. Raises StereoError
        (MessageTooLarge) when the master refuses it."""
        ...

    def shutdown(self, graceful: bool) -> None: ...

    def log(self, line: str) -> None:
        """A line in the master's log."""
        ...


@dataclass(slots=True)
class Context:
    """What the commands of one master work with: the master, and the sampler that turns
    counters into rates and per-process CPU time into percentages (:meth:`sample`)."""

    target: Target
    sampler: Sampler = field(default_factory=Sampler)

    def sample(self) -> None:
        self.sampler.sample(self.target.snapshot())


# -- reading ---------------------------------------------------------------------------------------


def _process_row(
    ctx: Context, snap: MasterSnapshot, slot: SlotSnapshot, proc: ProcessSnapshot
) -> dict[str, Any]:
    limit = snap.hub.outbox_limit
    peer = proc.hub
    return {
        "slot": slot.id,
        "pid": proc.pid,
        "state": proc.state,
        "current": proc.current,
        "uptime": round(snap.now - proc.started_at, 3),
        "restarts": slot.restarts,
        "last_exit": slot.last_exit,
        "rss": ctx.sampler.rss(proc.pid),
        "cpu_percent": ctx.sampler.cpu(proc.pid),
        "messages_in": peer.messages_in,
        "messages_out": peer.messages_out,
        "outbox_bytes": peer.outbox_bytes,
        "outbox_fill": round(peer.outbox_bytes / limit, 4) if limit else 0.0,
        **pool_fields(slot, proc),
    }


def _slot_row(slot: SlotSnapshot) -> dict[str, Any]:
    """A slot with no process (waiting to respawn, or failed)."""
    return {
        "slot": slot.id,
        "pid": None,
        "state": slot.state,
        "current": False,
        "uptime": None,
        "restarts": slot.restarts,
        "last_exit": slot.failed_reason or slot.last_exit,
        "rss": None,
        "cpu_percent": None,
        "messages_in": 0,
        "messages_out": 0,
        "outbox_bytes": 0,
        "outbox_fill": 0.0,
    }


def status(ctx: Context) -> list[dict[str, Any]]:
    """One row per worker process (a slot mid-restart has two), plus one per slot that has none."""
    snap = ctx.target.snapshot()
    rows: list[dict[str, Any]] = []
    for slot in snap.supervisor.slots:
        if not slot.processes:
            rows.append(_slot_row(slot))
        rows.extend(_process_row(ctx, snap, slot, proc) for proc in slot.processes)
    return rows


def _slot(snap: MasterSnapshot, slot_id: int) -> SlotSnapshot:
    slot = snap.supervisor.slot(slot_id)
    if slot is None:
        raise ControlError(f"there is no worker {slot_id} ({_known(snap)})")
    return slot


def _known(snap: MasterSnapshot) -> str:
    ids = snap.supervisor.ids
    if not ids:
        return "no workers are running"
    return "workers: " + _id_ranges(ids)


def _id_ranges(ids: list[int]) -> str:
    """Sorted ids, three or more in a row as a range (``1, 2, 5-1024``): a thousand workers
    still make a short line."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(
        f"{a}-{b}" if b - a >= 2 else ", ".join(map(str, range(a, b + 1))) for a, b in runs
    )


def _chosen(
    snap: MasterSnapshot, ids: list[int], known: list[int], what: str, missing: str
) -> list[int]:
    """``ids`` without repeats, in order; ControlError for an empty list (it must not fall back
    to a default choice) or for ids not in ``known`` (``missing``: how to say so)."""
    if not ids:
        raise ControlError(f"{what}: the list of worker ids is empty")
    chosen = list(dict.fromkeys(ids))
    present = set(known)
    unknown = [i for i in chosen if i not in present]
    if unknown:
        shown = ", ".join(map(str, unknown[:10]))
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ControlError(f"{what}: {missing} {shown}{more} ({_known(snap)})")
    return chosen


def inspect(ctx: Context, slot_id: int) -> dict[str, Any]:
    """Everything known about one worker slot and its processes."""
    snap = ctx.target.snapshot()
    slot = _slot(snap, slot_id)
    processes = []
    for proc in slot.processes:
        row = _process_row(ctx, snap, slot, proc)
        peer = proc.hub
        row.update(
            started_at=proc.started_wall,
            ready_after=None
            if proc.ready_at is None
            else round(proc.ready_at - proc.started_at, 3),
            stop_requested=proc.stop_requested,
            heartbeat_age=round(snap.now - proc.last_heartbeat, 3),
            bytes_in=peer.bytes_in,
            bytes_out=peer.bytes_out,
            peak_outbox_bytes=peer.peak_outbox_bytes,
            cut_off_reason=peer.cut_off_reason,
            boot_error=proc.boot_error,
        )
        row.update(ctx.sampler.details(proc.pid))
        processes.append(row)
    return {
        "slot": slot.id,
        "state": slot.state,
        "retiring": slot.retiring,
        "restarts": slot.restarts,
        "last_exit": slot.last_exit,
        "failed_reason": slot.failed_reason,
        "quick_failures": slot.quick_failures,
        "setbacks": slot.setbacks,
        "current_pid": slot.current_pid,
        "processes": processes,
    }


def stats(ctx: Context) -> dict[str, Any]:
    """Hub totals since the master started, and rates over the last second."""
    snap = ctx.target.snapshot()
    hub = snap.hub
    supervisor = snap.supervisor
    return {
        "pid": snap.pid,
        "uptime": round(snap.now - snap.started_at, 3),
        "workers": len(supervisor.active_ids),
        "processes": supervisor.processes,
        "peers": hub.peers,
        "broadcasts": hub.broadcasts,
        "deliveries": hub.deliveries,
        "bytes_in": hub.bytes_in,
        "bytes_out": hub.bytes_out,
        "cutoffs": hub.cutoffs,
        "respawns": supervisor.respawns,
        "next_seq": hub.next_seq,
        "rates": {name: round(value, 1) for name, value in ctx.sampler.rates.items()},
        "master_rss": ctx.sampler.rss(snap.pid),
        "master_cpu_percent": round(ctx.sampler.master_cpu, 1),
        "stopping": supervisor.stopping,
        "control_path": snap.control_path,
        "time": time.time(),
        "bridge": dataclasses.asdict(hub.bridge) if hub.bridge is not None else None,
        "relay": hub.relay,
    }


# -- acting ----------------------------------------------------------------------------------------


def _running(ctx: Context) -> MasterSnapshot:
    """A snapshot, unless the master is stopping (then nothing may be started or changed)."""
    snap = ctx.target.snapshot()
    if snap.supervisor.stopping:
        raise ControlError("the master is shutting down")
    return snap


def add(ctx: Context, count: int = 1, pool: str | None = None) -> dict[str, Any]:
    if count < 1:
        raise ControlError("add: the count must be at least 1")
    check_pool(_running(ctx), "add", pool)
    try:
        return {"added": ctx.target.add(count, pool)}
    except TooManyWorkers as exc:
        raise ControlError(f"add: {exc}") from None


def remove(
    ctx: Context, ids: list[int] | None = None, count: int | None = None, pool: str | None = None
) -> dict[str, Any]:
    """Retire workers gracefully (they drain; they are not replaced). With neither ``ids`` nor
    ``count``, the highest-numbered worker goes; an empty ``ids`` is refused."""
    snap = _running(ctx)
    if ids is not None:
        chosen = _chosen(snap, ids, snap.supervisor.active_ids, "remove", "no running worker")
    else:
        wanted = 1 if count is None else count
        if wanted < 1:
            raise ControlError("remove: the count must be at least 1")
        chosen = ctx.target.highest_slots(wanted, check_pool(snap, "remove", pool))
    return {"removed": ctx.target.remove(chosen)}


def scale(ctx: Context, workers: int, pool: str | None = None) -> dict[str, Any]:
    if workers < 0:
        raise ControlError("scale: the number of workers cannot be negative")
    check_pool(_running(ctx), "scale", pool)
    try:
        added, removed = ctx.target.scale(workers, pool)
    except TooManyWorkers as exc:
        raise ControlError(f"scale: {exc}") from None
    return {"added": added, "removed": removed}


async def restart(ctx: Context, ids: list[int] | None = None) -> dict[str, Any]:
    """Rolling restart of ``ids`` (None: all). Returns once every replacement is ready and the
    old processes were asked to drain."""
    snap = _running(ctx)
    if ids is not None:
        ids = _chosen(snap, ids, snap.supervisor.ids, "restart", "there is no worker")
    return {"restarted": await ctx.target.restart(ids)}


def kill(ctx: Context, slot_id: int, signal_name: str | int = "TERM") -> dict[str, Any]:
    signum = parse_signal(signal_name)
    slot = _slot(ctx.target.snapshot(), slot_id)
    pid = ctx.target.kill(slot.id, signum)
    if pid is None:
        raise ControlError(f"kill: worker {slot_id} has no process right now ({slot.state})")
    return {"slot": slot_id, "pid": pid, "signal": signal.Signals(signum).name}


def broadcast(ctx: Context, value: Any) -> dict[str, Any]:
    try:
        seq = ctx.target.broadcast(encode_cbor(value))
    except StereoError as exc:  # too large, not encodable
        raise ControlError(f"broadcast: {exc}") from None
    return {"seq": seq, "receivers": ctx.target.snapshot().hub.peers}


def shutdown(ctx: Context, mode: str = "graceful") -> dict[str, Any]:
    if mode not in ("graceful", "quick"):
        raise ControlError(f"shutdown: mode must be 'graceful' or 'quick', not {mode!r}")
    ctx.target.log(f"control: {mode} shutdown requested")
    ctx.target.shutdown(graceful=mode == "graceful")
    return {"stopping": True, "graceful": mode == "graceful"}


# -- the table the server dispatches on ----------------------------------------------------------

# Wire argument checks: requests may come from any program, so types are checked here again.
# Integers must fit 64 bits: CBOR carries bigger ones as bignums of any length, which a message
# could not even print; each command checks its own range (at least 1, --max-workers...).


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _arg_int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    value = args.get(key, default)
    if not _is_int64(value):
        raise ControlError(f"argument {key!r} must be an integer (of 64 bits at most)")
    assert isinstance(value, int)
    return value


def _arg_ids(args: dict[str, Any]) -> list[int] | None:
    value = args.get("ids")
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_int64(i) for i in value):
        raise ControlError("argument 'ids' must be a list of integers (of 64 bits at most)")
    return value


def _arg_optional_int(args: dict[str, Any], key: str) -> int | None:
    return None if args.get(key) is None else _arg_int(args, key)


def _arg_str(args: dict[str, Any], key: str, default: str) -> str:
    value = args.get(key, default)
    if not isinstance(value, str):
        raise ControlError(f"argument {key!r} must be a string")
    return value


def _arg_signal(args: dict[str, Any]) -> str | int:
    value = args.get("signal", "TERM")
    if not (isinstance(value, str) or _is_int64(value)):
        raise ControlError("argument 'signal' must be a name or a number")
    assert isinstance(value, str | int)
    return value


def _arg_value(args: dict[str, Any]) -> Any:
    if "value" not in args:
        raise ControlError("argument 'value' is missing")
    return args["value"]


#: Command name -> (context, wire arguments) -> result. The names are those of the client's table
#: (:data:`stereo.control.syntax.COMMANDS`) that run in the master.
HANDLERS: dict[str, Callable[[Context, dict[str, Any]], Any]] = {
    "status": lambda ctx, args: status(ctx),
    "inspect": lambda ctx, args: inspect(ctx, _arg_int(args, "id")),
    "add": lambda ctx, args: add(ctx, _arg_int(args, "count", 1), arg_pool(args)),
    "remove": lambda ctx, args: remove(
        ctx, _arg_ids(args), _arg_optional_int(args, "count"), arg_pool(args)
    ),
    "scale": lambda ctx, args: scale(ctx, _arg_int(args, "workers"), arg_pool(args)),
    "restart": lambda ctx, args: restart(ctx, _arg_ids(args)),
    "kill": lambda ctx, args: kill(ctx, _arg_int(args, "id"), _arg_signal(args)),
    "broadcast": lambda ctx, args: broadcast(ctx, _arg_value(args)),
    "stats": lambda ctx, args: stats(ctx),
    "snapshot": lambda ctx, args: dataclasses.asdict(ctx.target.snapshot()),
    "shutdown": lambda ctx, args: shutdown(ctx, _arg_str(args, "mode", "graceful")),
    "logs": lambda ctx, args: logs(
        ctx.target,
        _arg_optional_int(args, "after"),
        _arg_ids(args),
        _arg_int(args, "limit", DEFAULT_LOG_LINES),
        seconds_arg(args, "wait"),
    ),
}


async def execute(ctx: Context, name: Any, args: Any) -> Any:
    """Server side: run one command by name with wire arguments; raise ControlError on misuse."""
    if not isinstance(name, str):
        raise ControlError("'command' must be a string")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlError("'args' must be a map")
    handler = HANDLERS.get(name)
    if handler is None:
        raise ControlError(f"unknown command {name!r}")
    result = handler(ctx, args)
    if _inspect.isawaitable(result):
        awaitable: Awaitable[Any] = result
        result = await awaitable
    return result
