"""Worker processes and the slots they sit in: spawn, watch, respawn, drain, replace.

One task per process (:func:`run_worker_process`, a child process as a trio task) and one task
per slot (:meth:`Supervisor.supervise`, the respawn loop around it). The operations the signal
handler and the control server call (add, remove, restart, kill, stop) are methods here; each
takes effect through those tasks and returns without waiting longer than it must.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from .. import exitcodes
from ..snapshot import ProcessSnapshot, SlotSnapshot, SupervisorSnapshot
from ..wire.protocol import PROTOCOL_VERSION
from .binds import BoundSocket, is_reuse_port_anchor, slot_listener
from .config import Settings
from .hub import Hub, Peer
from .lifecycle import Backoff, ProcessState, SlotState, advance
from .output import OutputSink, pump_lines

# How long a dead worker's pipes may stay open (held by its own children) before we stop reading.
_OUTPUT_LINGER = 1.0
HUB_SOCKET_BUFFER = 1024 * 1024  # SO_SNDBUF of both ends of a hub connection


async def _kill_now(process: trio.Process) -> None:
    """deliver_cancel for workers: only used when the master itself is being torn down."""
    process.kill()
    await process.wait()


@dataclass(slots=True)
class ProcessInfo:
    """What is known about a process, as plain data for status displays."""

    pid: int
    state: str
    started_at: float
    ready_at: float | None


class WorkerProcess:
    """One worker process; its hub connection reports to it (:class:`PeerEvents`)."""

    peer: Peer  # set right after construction: the peer reports to this object

    def __init__(
        self, slot: Slot, process: trio.Process, welcome: Callable[[], dict[str, Any]]
    ) -> None:
        self.slot = slot
        self.process = process
        self._welcome = welcome
        self.pid = process.pid
        self.ready_event = trio.Event()
        self.last_heartbeat = trio.current_time()
        self.boot_error_reason: str | None = None
        self.state = ProcessState.STARTING
        self.started_at = trio.current_time()
        self.started_wall = _wall()
        self.ready_at: float | None = None
        self.returncode: int | None = None
        self.exited = trio.Event()
        self.stop_requested = False
        self.kill_reason: str | None = None

    def set_state(self, new: ProcessState) -> None:
        self.state = advance(self.state, new)

    # -- PeerEvents: what the hub connection reports --------------------------------------------

    def welcome(self) -> dict[str, Any]:
        return self._welcome()

    def ready(self) -> None:
        self.last_heartbeat = trio.current_time()
        self.ready_event.set()

    def heartbeat(self) -> None:
        self.last_heartbeat = trio.current_time()

    def boot_error(self, reason: str) -> None:
        self.boot_error_reason = reason

    @property
    def uptime(self) -> float:
        return trio.current_time() - self.started_at

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.Signals(signum))

    @property
    def exit_reason(self) -> str:
        if self.returncode is None:
            return ""
        reason = exitcodes.describe(self.returncode)
        if self.kill_reason:
            reason = f"{self.kill_reason}; {reason}"
        elif self.peer.cut_off_reason:
            reason = f"cut off: {self.peer.cut_off_reason}; {reason}"
        if self.boot_error_reason:
            reason = f"{reason}: {self.boot_error_reason}"
        if self.peer.truncated_bytes:
            reason = (
                f"{reason}; its connection ended inside a frame"
                f" ({self.peer.truncated_bytes} bytes dropped)"
            )
        return reason


def _wall() -> float:
    return time.time()


class Slot:
    def __init__(self, slot_id: int, backoff: Backoff) -> None:
        self.id = slot_id
        self.state = SlotState.RUNNING
        self.current: WorkerProcess | None = None
        self.processes: list[WorkerProcess] = []  # alive: current plus any still draining
        self.backoff = backoff
        self.restarts = 0
        self.last_exit: str | None = None
        self.failed_reason: str | None = None
        self.revive = trio.Event()
        self.retire = trio.Event()
        self.retiring = False
        # --reuse-port: this slot's own listening sockets, kept across its workers' restarts so
        # connections queued meanwhile wait for the replacement instead of being refused.
        self.own_sockets: list[socket.socket] = []

    def close_own_sockets(self) -> None:
        """Stop the kernel routing new connections here (the worker's copy drains)."""
        for sock in self.own_sockets:
            sock.close()
        self.own_sockets = []

    def set_state(self, new: SlotState) -> None:
        self.state = advance(self.state, new)


class Supervisor:
    def __init__(
        self, settings: Settings, hub: Hub, sockets: list[BoundSocket], sink: OutputSink
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.sockets = sockets
        # Classified once: --reuse-port anchors hold an address for the slots' own sockets and
        # are never handed to a worker; every other socket is shared by all workers.
        self._anchors = [b for b in sockets if is_reuse_port_anchor(b.sock)]
        self._shared = [b for b in sockets if b not in self._anchors]
        self.sink = sink
        self.slots: dict[int, Slot] = {}
        self.stopping = False
        self.respawns = 0
        self._nursery: trio.Nursery | None = None
        self._restart_lock = trio.Lock()
        self.live: set[WorkerProcess] = set()
        # Set (then replaced) whenever a process becomes ready or exits; for waiters such as a
        # master upgrade, which must not poll.
        self.changed = trio.Event()
        self.unexpected_exits = 0  # processes that exited without being asked to stop
        self.idle = trio.Event()  # set once every slot is removed and every process has exited

    # -- spawning ----------------------------------------------------------------------------

    def welcome(self, slot_id: int) -> dict[str, Any]:
        """The WELCOME body for a worker (see docs/protocol.md)."""
        s = self.settings
        return {
            "version": PROTOCOL_VERSION,
            "slot": slot_id,
            "app": s.app,
            "app_dir": os.path.abspath(s.app_dir),
            "listen_fds": self._listen_fds(slot_id),
            "max_message_size": s.max_message_size,
            "outbox_limit": s.worker_outbox_limit,
            "heartbeat_interval": s.heartbeat_interval,
        }

    def _listen_fds(self, slot_id: int) -> list[int]:
        """The shared listening sockets, then the slot's own (--reuse-port); never an anchor."""
        fds = [b.sock.fileno() for b in self._shared if b.sock.fileno() != -1]  # -1: shut down
        slot = self.slots.get(slot_id)
        if slot is not None:
            fds += [sock.fileno() for sock in slot.own_sockets]
        return fds

    async def run_worker_process(
        self, slot: Slot, *, task_status: trio.TaskStatus[WorkerProcess]
    ) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (parent, child):
            # Room for a 1 MiB broadcast in flight: with the 208 KiB default, a big message
            # crosses each hop in several wake-ups of the reader (the kernel caps this at
            # net.core.wmem_max).
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HUB_SOCKET_BUFFER)
        env = dict(os.environ, STEREO_HUB_FD=str(child.fileno()))
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        command = [sys.executable, "-m", "stereo.worker"]
        proc: WorkerProcess | None = None
        try:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        command,
                        check=False,
                        deliver_cancel=_kill_now,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        pass_fds=(child.fileno(), *self._listen_fds(slot.id)),
                        env=env,
                        # Own process group: Ctrl-C in the terminal reaches the master only.
                        process_group=0,
                    )
                )
                child.close()
                proc = WorkerProcess(slot, process, partial(self.welcome, slot.id))
                peer = proc.peer = Peer(slot.id, parent, self.settings.max_message_size, proc)
                self.live.add(proc)
                prefix = f"[worker {slot.id}] ".encode()
                assert process.stdout is not None and process.stderr is not None
                output = trio.CancelScope()

                async def pumps(out: trio.abc.ReceiveStream, err: trio.abc.ReceiveStream) -> None:
                    with output:
                        async with trio.open_nursery() as pump_nursery:
                            pump_nursery.start_soon(pump_lines, out, prefix, self.sink)
                            pump_nursery.start_soon(pump_lines, err, prefix, self.sink)

                nursery.start_soon(pumps, process.stdout, process.stderr)
                nursery.start_soon(self.hub.serve_peer, peer, max(self.settings.timeout, 5.0))
                watchdog = trio.CancelScope()
                nursery.start_soon(self._watch, proc, watchdog)
                task_status.started(proc)
                proc.returncode = await process.wait()
                watchdog.cancel()
                proc.set_state(ProcessState.EXITED)
                # The reader may not have read the last bytes the worker wrote: let it reach EOF
                # (at once, normally) so those broadcasts are relayed, then close regardless.
                with trio.move_on_after(_OUTPUT_LINGER):
                    await peer.ended.wait()
                peer.stream.socket.close()
                self._exited(proc)
                # Its own children may hold the pipes open; read what is there, then give up.
                output.deadline = trio.current_time() + _OUTPUT_LINGER
        finally:
            child.close()
            parent.close()
            if proc is not None:
                self._exited(proc)

    def _exited(self, proc: WorkerProcess) -> None:
        if not proc.exited.is_set():
            proc.exited.set()
            self.live.discard(proc)
            if proc in proc.slot.processes:
                proc.slot.processes.remove(proc)
            if not proc.stop_requested:
                self.unexpected_exits += 1
            self._changed()
            self._check_idle()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _watch(self, proc: WorkerProcess, scope: trio.CancelScope) -> None:
        """Mark the process ready when it says so, then kill it if its heartbeats stop."""
        with scope:
            await proc.ready_event.wait()
            proc.ready_at = trio.current_time()
            if proc.state is ProcessState.STARTING:
                proc.set_state(ProcessState.READY)
                self._changed()
            timeout = self.settings.timeout
            while True:
                deadline = proc.last_heartbeat + timeout
                if trio.current_time() >= deadline:
                    proc.kill_reason = f"no heartbeat for {timeout:g} s (event loop blocked?)"
                    self.sink.log(f"worker {proc.slot.id} (pid {proc.pid}): {proc.kill_reason}")
                    proc.signal(signal.SIGKILL)
                    return
                await trio.sleep_until(deadline)

    async def _spawn(self, slot: Slot) -> WorkerProcess:
        assert self._nursery is not None
        try:
            proc: WorkerProcess = await self._nursery.start(self.run_worker_process, slot)
        except BaseExceptionGroup as group:
            # fork/exec failures come out of the process task's nursery wrapped in a group.
            spawn_errors, rest = group.split(OSError)
            if rest is not None or spawn_errors is None:
                raise
            raise _first_leaf(spawn_errors) from group
        if not proc.exited.is_set():
            slot.processes.append(proc)
            if slot.retiring or self.stopping:
                self._stop_process(proc)  # a stop raced with this start
        return proc

    # -- one task per slot: the respawn loop -----------------------------------------------------

    async def supervise(self, slot: Slot) -> None:
        while not (slot.retiring or self.stopping):
            try:
                proc = await self._spawn(slot)
            except OSError as exc:
                # fork/exec failed (out of memory, fd limit...): a bad state to loop in.
                slot.failed_reason = f"cannot start a worker process: {exc}"
                slot.set_state(SlotState.FAILED)
                self.sink.log(f"worker {slot.id} failed: {slot.failed_reason}")
                await _first(slot.retire, slot.revive)
                slot.revive = trio.Event()
                if not (slot.retiring or self.stopping):
                    slot.set_state(SlotState.RUNNING)
                continue
            slot.current = proc
            await self._wait_current_exit(slot)
            proc = slot.current
            slot.current = None
            crashed = not proc.stop_requested
            slot.last_exit = proc.exit_reason
            if slot.retiring or self.stopping:
                break
            slot.restarts += 1
            self.respawns += 1
            slot.backoff.record_exit(proc.uptime, crashed)
            code = proc.returncode
            if code == exitcodes.APP_LOAD_ERROR or slot.backoff.exhausted:
                await self._fail(slot, proc)
            else:
                delay = slot.backoff.delay(random.random())
                self.sink.log(
                    f"worker {slot.id} (pid {proc.pid}) exited: {proc.exit_reason};"
                    f" restarting{f' in {delay:.2f} s' if delay else ''}"
                )
                if delay:
                    slot.set_state(SlotState.BACKOFF)
                    with trio.move_on_after(delay):
                        await _first(slot.retire, slot.revive)
                    slot.revive = trio.Event()
                    if slot.retiring or self.stopping:
                        break
                slot.set_state(SlotState.RUNNING)
        if slot.state is not SlotState.REMOVED:
            slot.set_state(SlotState.REMOVED)
        slot.close_own_sockets()
        self.slots.pop(slot.id, None)
        self._check_idle()

    async def _wait_current_exit(self, slot: Slot) -> None:
        """Wait until the slot's current process exits; a rolling restart may swap it meanwhile."""
        while True:
            current = slot.current
            assert current is not None
            await current.exited.wait()
            if slot.current is current:
                return

    async def _fail(self, slot: Slot, proc: WorkerProcess) -> None:
        slot.failed_reason = proc.exit_reason
        slot.set_state(SlotState.FAILED)
        self.sink.log(
            f"worker {slot.id} failed: {proc.exit_reason}; not restarting"
            " (fix the app, then `restart`)"
        )
        await _first(slot.retire, slot.revive)
        slot.revive = trio.Event()
        slot.backoff.reset()
        if not (slot.retiring or self.stopping):
            slot.failed_reason = None
            slot.set_state(SlotState.RUNNING)

    # -- operations (signals and control commands) ----------------------------------------------

    def add(self, count: int = 1) -> list[int]:
        """Open ``count`` new slots, each taking the lowest free id; returns their ids."""
        assert self._nursery is not None
        if self.stopping:
            return []
        added = []
        for _ in range(count):
            slot_id = next(i for i in range(1, len(self.slots) + 2) if i not in self.slots)
            slot = Slot(
                slot_id,
                Backoff(
                    self.settings.backoff_base,
                    self.settings.backoff_cap,
                    self.settings.backoff_limit,
                    self.settings.quick_exit,
                ),
            )
            self._open_own_sockets(slot)
            self.slots[slot_id] = slot
            self._nursery.start_soon(self.supervise, slot)
            added.append(slot_id)
        return added

    def _open_own_sockets(self, slot: Slot) -> None:
        for bound in self._anchors:
            if bound.sock.fileno() != -1:  # -1: shut down
                try:
                    slot.own_sockets.append(slot_listener(bound.sock))
                except OSError as exc:  # fd limit, most likely: the slot serves without it
                    self.sink.log(f"worker {slot.id}: cannot listen on {bound.address}: {exc}")

    def remove(self, slot_ids: Iterable[int]) -> list[int]:
        """Retire slots gracefully: their workers drain and are not replaced."""
        removed = []
        for slot_id in slot_ids:
            slot = self.slots.get(slot_id)
            if slot is None or slot.retiring:
                continue
            slot.retiring = True
            slot.retire.set()
            slot.close_own_sockets()
            for proc in slot.processes:
                self._stop_process(proc)
            removed.append(slot_id)
        return removed

    def highest_slots(self, count: int) -> list[int]:
        active = sorted((s.id for s in self.slots.values() if not s.retiring), reverse=True)
        return active[:count]

    def scale(self, target: int) -> tuple[list[int], list[int]]:
        active = [s for s in self.slots.values() if not s.retiring]
        if target > len(active):
            return self.add(target - len(active)), []
        return [], self.remove(self.highest_slots(len(active) - target))

    def _stop_process(self, proc: WorkerProcess) -> None:
        """Ask one process to drain (SIGTERM), and SIGKILL it after --graceful-timeout."""
        assert self._nursery is not None
        if proc.stop_requested or proc.returncode is not None:
            return
        proc.stop_requested = True
        if proc.state is not ProcessState.EXITED:
            proc.set_state(ProcessState.DRAINING)
        proc.signal(signal.SIGTERM)
        self._nursery.start_soon(self._enforce_deadline, proc)

    async def _enforce_deadline(self, proc: WorkerProcess) -> None:
        with trio.move_on_after(self.settings.graceful_timeout):
            await proc.exited.wait()
            return
        proc.kill_reason = f"still draining after {self.settings.graceful_timeout:g} s"
        self.sink.log(f"worker {proc.slot.id} (pid {proc.pid}): {proc.kill_reason}; killing it")
        proc.signal(signal.SIGKILL)

    @property
    def boot_timeout(self) -> float:
        """How long a rolling restart waits for a replacement to be ready (boot is otherwise
        not timed: a slow import is not a hang)."""
        return max(self.settings.timeout, 5.0)

    async def restart(self, slot_ids: Iterable[int] | None = None) -> list[int]:
        """Rolling restart, one slot at a time: the replacement is ready before the old one
        drains. A FAILED or BACKOFF slot is simply started again. Returns the restarted ids."""
        done = []
        async with self._restart_lock:
            for slot_id in list(slot_ids if slot_ids is not None else sorted(self.slots)):
                slot = self.slots.get(slot_id)
                if slot is None or slot.retiring or self.stopping:
                    continue
                if slot.state in (SlotState.FAILED, SlotState.BACKOFF):
                    slot.revive.set()
                    done.append(slot_id)
                    continue
                if slot.current is None:
                    continue
                try:
                    new = await self._spawn(slot)
                except OSError as exc:
                    self.sink.log(f"restart of worker {slot_id}: cannot start a process: {exc}")
                    continue
                with trio.move_on_after(self.boot_timeout):
                    await _first(new.ready_event, new.exited)
                if not new.ready_event.is_set() and not new.exited.is_set():
                    self.sink.log(
                        f"restart of worker {slot_id}: the replacement (pid {new.pid}) was not"
                        f" ready within {self.boot_timeout:g} s; stopping it, the old one serves on"
                    )
                    self._stop_process(new)
                    continue
                if new.exited.is_set() or slot.retiring or self.stopping:
                    continue  # the replacement died (the old one keeps serving), or all stop
                # Re-read: the old process may have died while the replacement booted, and the
                # respawn loop may have started another one; whatever is current now is what
                # the replacement supersedes.
                old = slot.current
                if old is None or old.exited.is_set():
                    # The respawn loop is handling that death (maybe in backoff): it owns the
                    # slot now, and this replacement would be one process too many.
                    self._stop_process(new)
                    continue
                slot.current = new
                slot.restarts += 1
                self._stop_process(old)
                done.append(slot_id)
        return done

    def kill(self, slot_id: int, signum: int) -> int | None:
        slot = self.slots.get(slot_id)
        if slot is None or slot.current is None:
            return None
        slot.current.signal(signum)
        return slot.current.pid

    def stop(self, graceful: bool = True) -> None:
        """Stop every worker: drain (graceful) or SIGKILL now."""
        self.stopping = True
        for slot in list(self.slots.values()):
            slot.retiring = True
            slot.retire.set()
            slot.close_own_sockets()
            for proc in slot.processes:
                if graceful:
                    self._stop_process(proc)
                else:
                    proc.stop_requested = True
                    proc.signal(signal.SIGKILL)
        self._check_idle()

    def _check_idle(self) -> None:
        if self.stopping and not self.slots and not self.live:
            self.idle.set()

    # -- what the control plane reads -------------------------------------------------------

    def snapshot(self) -> SupervisorSnapshot:
        """Every slot and live process as plain data (a removed slot appears while one of its
        processes still drains)."""
        by_slot: dict[int, list[WorkerProcess]] = {}
        for proc in sorted(self.live, key=lambda p: p.started_at):
            by_slot.setdefault(proc.slot.id, []).append(proc)
        slots = dict(self.slots)
        for procs in by_slot.values():
            slots.setdefault(procs[0].slot.id, procs[0].slot)
        return SupervisorSnapshot(
            slots=tuple(
                _slot_snapshot(slots[slot_id], by_slot.get(slot_id, []))
                for slot_id in sorted(slots)
            ),
            respawns=self.respawns,
            stopping=self.stopping,
        )

    # -- the task ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.add(self.settings.workers)
            task_status.started()
            await self.idle.wait()
            nursery.cancel_scope.cancel()


def _slot_snapshot(slot: Slot, procs: list[WorkerProcess]) -> SlotSnapshot:
    return SlotSnapshot(
        id=slot.id,
        state=slot.state.value,
        retiring=slot.retiring,
        restarts=slot.restarts,
        last_exit=slot.last_exit,
        failed_reason=slot.failed_reason,
        quick_failures=slot.backoff.failures,
        processes=tuple(_process_snapshot(p, p is slot.current) for p in procs),
    )


def _process_snapshot(proc: WorkerProcess, current: bool) -> ProcessSnapshot:
    return ProcessSnapshot(
        pid=proc.pid,
        state=proc.state.value,
        current=current,
        started_at=proc.started_at,
        started_wall=proc.started_wall,
        ready_at=proc.ready_at,
        stop_requested=proc.stop_requested,
        last_heartbeat=proc.last_heartbeat,
        boot_error=proc.boot_error_reason,
        hub=proc.peer.statistics(),
    )


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _first(*events: trio.Event) -> None:
    """Wait until any of the events is set."""
    if any(event.is_set() for event in events):
        await trio.lowlevel.checkpoint()
        return
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)
