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

import inspect as _inspect
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil
import trio

from ..errors import ControlError, StereoError
from ..wire.control import parse_signal
from ..wire.protocol import encode_cbor

if TYPE_CHECKING:
    from ..master.master import Master
    from ..master.supervisor import Slot, WorkerProcess


# -- per-master state the commands share ------------------------------------------------------


@dataclass(slots=True)
class _Sample:
    at: float
    broadcasts: int
    deliveries: int
    bytes_in: int
    bytes_out: int
    respawns: int


class Context:
    """What the commands of one master work with: the master, plus the samples that turn
    counters into rates and per-process CPU into percentages (:meth:`sample`, once a second)."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self._processes: dict[int, psutil.Process] = {}
        self._cpu: dict[int, float] = {}
        self._last: _Sample | None = None
        self.rates: dict[str, float] = dict.fromkeys(_RATE_FIELDS, 0.0)
        self._self = psutil.Process()
        self.master_cpu = 0.0

    def _snapshot(self) -> _Sample:
        stats = self.master.hub.statistics()
        return _Sample(
            trio.current_time(),
            stats.broadcasts,
            stats.deliveries,
            stats.bytes_in,
            stats.bytes_out,
            self.master.supervisor.respawns,
        )

    def sample(self) -> None:
        """Update rates and CPU percentages over the time since the previous call."""
        now = self._snapshot()
        last, self._last = self._last, now
        if last is not None and now.at > last.at:
            span = now.at - last.at
            self.rates = {
                name: (getattr(now, attr) - getattr(last, attr)) / span
                for name, attr in _RATE_FIELDS.items()
            }
        live = {proc.pid for proc in self.master.supervisor.live}
        for pid in list(self._processes):
            if pid not in live:
                del self._processes[pid]
                self._cpu.pop(pid, None)
        for pid in live:
            handle = self._process(pid)
            if handle is not None:
                try:
                    self._cpu[pid] = handle.cpu_percent(None)
                except psutil.Error:
                    self._cpu.pop(pid, None)
        try:
            self.master_cpu = self._self.cpu_percent(None)
        except psutil.Error:
            pass

    def _process(self, pid: int) -> psutil.Process | None:
        handle = self._processes.get(pid)
        if handle is None:
            try:
                handle = psutil.Process(pid)
                handle.cpu_percent(None)  # the first call only starts the measurement
            except psutil.Error:
                return None
            self._processes[pid] = handle
        return handle

    def rss(self, pid: int) -> int | None:
        handle = self._process(pid)
        if handle is None:
            return None
        try:
            return int(handle.memory_info().rss)
        except psutil.Error:
            return None

    def cpu(self, pid: int) -> float | None:
        value = self._cpu.get(pid)
        return None if value is None else round(value, 1)


_RATE_FIELDS = {
    "broadcasts_per_s": "broadcasts",
    "deliveries_per_s": "deliveries",
    "bytes_in_per_s": "bytes_in",
    "bytes_out_per_s": "bytes_out",
    "respawns_per_s": "respawns",
}


# -- the commands --------------------------------------------------------------------------------


def _process_row(ctx: Context, slot: Slot, proc: WorkerProcess) -> dict[str, Any]:
    limit = ctx.master.hub.outbox_limit
    peer = proc.peer
    return {
        "slot": slot.id,
        "pid": proc.pid,
        "state": proc.state.value,
        "current": proc is slot.current,
        "uptime": round(proc.uptime, 3),
        "restarts": slot.restarts,
        "last_exit": slot.last_exit,
        "rss": ctx.rss(proc.pid),
        "cpu_percent": ctx.cpu(proc.pid),
        "messages_in": peer.messages_in,
        "messages_out": peer.messages_out,
        "outbox_bytes": peer.pending_bytes,
        "outbox_fill": round(peer.pending_bytes / limit, 4) if limit else 0.0,
    }


def _slot_row(slot: Slot) -> dict[str, Any]:
    """A slot with no process (waiting to respawn, or failed)."""
    return {
        "slot": slot.id,
        "pid": None,
        "state": slot.state.value,
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
    rows: list[dict[str, Any]] = []
    supervisor = ctx.master.supervisor
    by_slot: dict[int, list[WorkerProcess]] = {}
    for proc in supervisor.all_processes():
        by_slot.setdefault(proc.slot.id, []).append(proc)
    slots = dict(supervisor.slots)
    for proc_list in by_slot.values():
        slots.setdefault(proc_list[0].slot.id, proc_list[0].slot)  # a removed slot still draining
    for slot_id in sorted(slots):
        slot = slots[slot_id]
        procs = by_slot.get(slot_id, [])
        if not procs:
            rows.append(_slot_row(slot))
        for proc in procs:
            rows.append(_process_row(ctx, slot, proc))
    return rows


def _slot(ctx: Context, slot_id: int) -> Slot:
    slot = ctx.master.supervisor.slots.get(slot_id)
    if slot is None:
        raise ControlError(f"there is no worker {slot_id} ({_known(ctx)})")
    return slot


def _known(ctx: Context) -> str:
    ids = sorted(ctx.master.supervisor.slots)
    if not ids:
        return "no workers are running"
    return "workers: " + ", ".join(map(str, ids))


def inspect(ctx: Context, slot_id: int) -> dict[str, Any]:
    """Everything known about one worker slot and its processes."""
    slot = _slot(ctx, slot_id)
    now = trio.current_time()
    processes = []
    for proc in slot.processes:
        row = _process_row(ctx, slot, proc)
        peer = proc.peer
        row.update(
            started_at=proc.started_wall,
            ready_after=None
            if proc.ready_at is None
            else round(proc.ready_at - proc.started_at, 3),
            stop_requested=proc.stop_requested,
            heartbeat_age=round(now - proc.last_heartbeat, 3),
            bytes_in=peer.bytes_in,
            bytes_out=peer.bytes_out,
            peak_outbox_bytes=peer.peak_pending_bytes,
            cut_off_reason=peer.cut_off_reason,
            boot_error=proc.boot_error_reason,
        )
        handle = ctx._process(proc.pid)
        if handle is not None:
            try:
                with handle.oneshot():
                    row.update(
                        threads=handle.num_threads(),
                        open_files=handle.num_fds(),
                        cmdline=handle.cmdline(),
                    )
            except psutil.Error:
                pass
        processes.append(row)
    return {
        "slot": slot.id,
        "state": slot.state.value,
        "retiring": slot.retiring,
        "restarts": slot.restarts,
        "last_exit": slot.last_exit,
        "failed_reason": slot.failed_reason,
        "quick_failures": slot.backoff.failures,
        "current_pid": slot.current.pid if slot.current is not None else None,
        "processes": processes,
    }


def add(ctx: Context, count: int = 1) -> dict[str, Any]:
    if count < 1:
        raise ControlError("add: the count must be at least 1")
    _not_stopping(ctx)
    return {"added": ctx.master.supervisor.add(count)}


def remove(ctx: Context, ids: list[int] | None = None, count: int | None = None) -> dict[str, Any]:
    """Retire workers gracefully (they drain; they are not replaced). With neither ``ids`` nor
    ``count``, the highest-numbered worker goes."""
    supervisor = ctx.master.supervisor
    _not_stopping(ctx)
    if ids:
        unknown = [i for i in ids if i not in supervisor.slots or supervisor.slots[i].retiring]
        if unknown:
            raise ControlError(
                f"remove: no running worker {', '.join(map(str, unknown))} ({_known(ctx)})"
            )
        chosen = list(dict.fromkeys(ids))
    else:
        wanted = 1 if count is None else count
        if wanted < 1:
            raise ControlError("remove: the count must be at least 1")
        chosen = supervisor.highest_slots(wanted)
    return {"removed": supervisor.remove(chosen)}


def scale(ctx: Context, workers: int) -> dict[str, Any]:
    if workers < 0:
        raise ControlError("scale: the number of workers cannot be negative")
    _not_stopping(ctx)
    added, removed = ctx.master.supervisor.scale(workers)
    return {"added": added, "removed": removed}


async def restart(ctx: Context, ids: list[int] | None = None) -> dict[str, Any]:
    """Rolling restart of ``ids`` (None: all). Returns once every replacement is ready and the
    old processes were asked to drain."""
    supervisor = ctx.master.supervisor
    _not_stopping(ctx)
    if ids is not None:
        for slot_id in ids:
            _slot(ctx, slot_id)
    return {"restarted": await supervisor.restart(ids)}


def kill(ctx: Context, slot_id: int, signal_name: str | int = "TERM") -> dict[str, Any]:
    signum = parse_signal(signal_name)
    slot = _slot(ctx, slot_id)
    pid = ctx.master.supervisor.kill(slot.id, signum)
    if pid is None:
        raise ControlError(f"kill: worker {slot_id} has no process right now ({slot.state.value})")
    return {"slot": slot_id, "pid": pid, "signal": signal.Signals(signum).name}


def broadcast(ctx: Context, value: Any) -> dict[str, Any]:
    try:
        seq = ctx.master.hub.broadcast_from_master(encode_cbor(value))
    except StereoError as exc:  # too large, not encodable
        raise ControlError(f"broadcast: {exc}") from None
    return {"seq": seq, "receivers": len(ctx.master.hub.peers)}


def stats(ctx: Context) -> dict[str, Any]:
    """Hub totals since the master started, and rates over the last second."""
    hub = ctx.master.hub.statistics()
    supervisor = ctx.master.supervisor
    return {
        "pid": os.getpid(),
        "uptime": round(trio.current_time() - ctx.master.started_at, 3),
        "workers": sum(1 for slot in supervisor.slots.values() if not slot.retiring),
        "processes": len(supervisor.live),
        "peers": hub.peers,
        "broadcasts": hub.broadcasts,
        "deliveries": hub.deliveries,
        "bytes_in": hub.bytes_in,
        "bytes_out": hub.bytes_out,
        "cutoffs": hub.cutoffs,
        "respawns": supervisor.respawns,
        "next_seq": hub.next_seq,
        "rates": {name: round(value, 1) for name, value in ctx.rates.items()},
        "master_rss": ctx.rss(os.getpid()),
        "master_cpu_percent": round(ctx.master_cpu, 1),
        "stopping": supervisor.stopping,
        "control_path": ctx.master.settings.control_path,
        "time": time.time(),
    }


def shutdown(ctx: Context, mode: str = "graceful") -> dict[str, Any]:
    if mode not in ("graceful", "quick"):
        raise ControlError(f"shutdown: mode must be 'graceful' or 'quick', not {mode!r}")
    ctx.master.sink.log(f"control: {mode} shutdown requested")
    ctx.master.shutdown(graceful=mode == "graceful")
    return {"stopping": True, "graceful": mode == "graceful"}


def _not_stopping(ctx: Context) -> None:
    if ctx.master.supervisor.stopping:
        raise ControlError("the master is shutting down")


# -- the table the server dispatches on --------------------------------------------------------

# Wire argument checks: requests may come from any program, so types are checked here again.


def _arg_int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    value = args.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"argument {key!r} must be an integer")
    return value


def _arg_ids(args: dict[str, Any]) -> list[int] | None:
    value = args.get("ids")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise ControlError("argument 'ids' must be a list of integers")
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
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ControlError("argument 'signal' must be a name or a number")
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
    "add": lambda ctx, args: add(ctx, _arg_int(args, "count", 1)),
    "remove": lambda ctx, args: remove(ctx, _arg_ids(args), _arg_optional_int(args, "count")),
    "scale": lambda ctx, args: scale(ctx, _arg_int(args, "workers")),
    "restart": lambda ctx, args: restart(ctx, _arg_ids(args)),
    "kill": lambda ctx, args: kill(ctx, _arg_int(args, "id"), _arg_signal(args)),
    "broadcast": lambda ctx, args: broadcast(ctx, _arg_value(args)),
    "stats": lambda ctx, args: stats(ctx),
    "shutdown": lambda ctx, args: shutdown(ctx, _arg_str(args, "mode", "graceful")),
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
