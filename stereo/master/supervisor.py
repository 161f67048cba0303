"""Worker slots: spawn, watch, respawn, drain, replace.

One task per slot (:meth:`Supervisor._supervise`) drives the slot's state machine
(:class:`~stereo.master.lifecycle.SlotLifecycle`): it starts a process when the slot is RUNNING
without one, waits for its exit, sleeps through a BACKOFF, waits in FAILED. One task per process
(:meth:`Supervisor._process_task`, around the launcher's process task) watches heartbeats and does
the bookkeeping when it ends. The operations (add, remove, restart, kill, stop) feed events to the
machines and return without waiting longer than they must; the slot's task acts on the change.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from logging import ERROR, WARNING
from typing import Any, Protocol

import trio

from .. import exitcodes
from ..snapshot import SupervisorSnapshot
from .binds import BoundSocket, is_reuse_port_anchor, slot_listener
from .config import Settings
from .lifecycle import Action, Exit, ProcessEvent, ProcessState, SlotEvent, SlotLifecycle, SlotState
from .process import WorkerProcess, first_leaf
from .slot import Slot, SlotIds, only_pools_left, pool_of, slot_snapshot
from .startup import BootReports, status_of, tell_once
from .watchdog import either, run_within, wait_silence
from .welcome import worker_welcome


class Launch(Protocol):
    """A process task: start a worker for the slot, report its record through ``task_status``,
    return once it has ended (its record's ``ended`` is set). OSError: it could not be started.
    :meth:`stereo.master.process.Launcher.run` is the real one; tests pass fakes."""

    def __call__(
        self, slot_id: int, *, task_status: trio.TaskStatus[WorkerProcess]
    ) -> Awaitable[None]: ...


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        sockets: list[BoundSocket],
        log: Callable[..., None],  # (line, level=logging.INFO), as OutputSink.log
        launch: Launch | None = None,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        # Classified once: --reuse-port anchors hold an address for the slots' own sockets and
        # are never handed to a worker; every other socket is shared by all workers.
        self._anchors = [b for b in sockets if is_reuse_port_anchor(b.sock)]
        self._shared = [b for b in sockets if b not in self._anchors]
        self.log = log
        self.warn, self.error = partial(log, level=WARNING), partial(log, level=ERROR)
        self.launch: Launch | None = launch  # set by the master when None here
        self.slots: dict[int, Slot] = {}
        self._ids = SlotIds(settings.max_workers)
        self.stopping = False
        self.respawns = 0
        self._nursery: trio.Nursery | None = None
        self._restart_lock = trio.Lock()
        self.live: set[WorkerProcess] = set()
        # Set (then replaced) whenever a process becomes ready or exits, or a slot goes; for
        # waiters such as a master upgrade, which must not poll.
        self.changed = trio.Event()
        self.unexpected_exits = 0  # processes that exited without being asked to stop
        self.idle = trio.Event()  # set once every slot is removed and every process has exited
        self.boot = BootReports(settle=settings.quick_exit)
        self.boot_failed = trio.Event()  # set when a boot error ended the start-up (see startup.py)
        self.started = False  # the start-up's workers were added (by run())

    # -- what a new worker is told -----------------------------------------------------------------

    def welcome(self, slot_id: int) -> dict[str, Any]:
        """The WELCOME body for a worker or a pool process (see docs/protocol.md)."""
        pool = pool_of(self.slots, slot_id)
        return worker_welcome(
            self.settings, slot_id, pool, [] if pool else self.listen_fds(slot_id)
        )

    def listen_fds(self, slot_id: int) -> list[int]:
        """The shared listening sockets, then the slot's own (--reuse-port); never an anchor."""
        fds = [b.sock.fileno() for b in self._shared if b.sock.fileno() != -1]  # -1: shut down
        slot = self.slots.get(slot_id)
        if slot is not None:
            fds += [sock.fileno() for sock in slot.own_sockets]
        return fds

    # -- the state machines' driver ----------------------------------------------------------------

    def _apply(self, slot: Slot, event: SlotEvent) -> None:
        """Feed ``event`` to the slot's machine and perform what it asks for at once; the slot's
        task (nudged) does the rest: spawning, sleeping, waiting."""
        action = slot.life.handle(event, random.random())
        if action is Action.STOP:
            slot.close_own_sockets()
            for proc in slot.processes:
                self._stop_process(proc)
        elif action is Action.RELEASE:
            slot.close_own_sockets()
            if self.slots.pop(slot.id, None) is not None:
                self._ids.release(slot.id)
            self._changed()
            self._check_idle()
        slot.nudge()

    async def _supervise(self, slot: Slot) -> None:
        while True:
            slot.clear_nudge()  # no checkpoint from here to the wait: no wake-up is lost
            state = slot.state
            if state is SlotState.REMOVED:
                return
            if slot.current is not None:  # RUNNING or RETIRING: until it exits
                await self._wait_current_exit(slot)
            elif state is SlotState.RUNNING:
                await self._start(slot)
            elif state is SlotState.BACKOFF:
                with trio.move_on_after(slot.life.delay):
                    await slot.wait_nudge()
                if slot.state is SlotState.BACKOFF:
                    self._apply(slot, SlotEvent.WOKE)
            elif state is SlotState.RETIRING:
                self._apply(slot, SlotEvent.EXITED)  # retired while no process was left
            else:  # FAILED: until an operator revives or removes it
                await slot.wait_nudge()

    async def _start(self, slot: Slot) -> None:
        try:
            proc = await self._spawn(slot)
        except OSError as exc:
            # fork/exec failed (out of memory, fd limit...): a shortage that may pass, so it is
            # retried with capped backoff, never given up on.
            slot.last_exit = f"cannot start a worker process: {exc}"
            self._apply(slot, slot.life.start_failed())
            if not slot.retiring:
                self.warn(
                    f"worker {slot.id}: {slot.last_exit}; retrying in {slot.life.delay:.2f} s"
                )
            return
        slot.current = proc

    async def _wait_current_exit(self, slot: Slot) -> None:
        """Wait until the slot's current process exits (a rolling restart may swap it
        meanwhile), then let the machine decide what comes next."""
        while True:
            proc = slot.current
            assert proc is not None
            await proc.ended.wait()
            if slot.current is proc:
                break
        self._forget(slot, proc)  # now, not when its task next runs: status reads it next
        slot.current = None
        slot.last_exit = proc.exit_reason
        retiring = slot.retiring
        cannot_boot = not retiring and self.boot.exited(trio.current_time(), proc, self.live)
        event = slot.life.exit_event(
            Exit(
                uptime=proc.uptime,
                requested=proc.stop_requested,
                load_error=proc.returncode == exitcodes.APP_LOAD_ERROR,
                outside=proc.killed_from_outside,
            )
        )
        if not retiring:
            slot.count_restart(proc.restart_reason)
            self.respawns += 1
            if event is SlotEvent.BROKEN:
                slot.failed_reason = proc.exit_reason
        self._apply(slot, event)
        if retiring:
            return
        if cannot_boot:  # the reason is the master's to tell, as it exits
            self.error(f"worker {slot.id} failed at start-up: {status_of(proc)}")
            self.boot_failed.set()
        elif slot.state is SlotState.FAILED:
            told = tell_once(slot.id, proc, self.slots.values(), self.boot_failed.is_set())
            self.error(f"worker {slot.id} failed: {told}")
        else:
            delay = slot.life.delay
            self.warn(
                f"worker {slot.id} (pid {proc.pid}) exited: {proc.exit_reason};"
                f" restarting{f' in {delay:.2f} s' if delay else ''}"
            )

    # -- one task per process ----------------------------------------------------------------------

    async def _spawn(self, slot: Slot) -> WorkerProcess:
        assert self._nursery is not None
        try:
            proc: WorkerProcess = await self._nursery.start(self._process_task, slot)
        except BaseExceptionGroup as group:
            # fork/exec failures come out of the process task's nursery wrapped in a group.
            spawn_errors, rest = group.split(OSError)
            if rest is not None or spawn_errors is None:
                raise
            raise first_leaf(spawn_errors) from group
        if slot.retiring or self.stopping:
            self._stop_process(proc)  # a stop raced with this start
        return proc

    async def _process_task(
        self, slot: Slot, *, task_status: trio.TaskStatus[WorkerProcess]
    ) -> None:
        assert self.launch is not None
        proc: WorkerProcess | None = None
        try:
            async with trio.open_nursery() as nursery:
                proc = await nursery.start(self.launch, slot.id)
                self.live.add(proc)
                slot.processes.append(proc)
                nursery.start_soon(self._watch, proc)
                task_status.started(proc)
                await proc.ended.wait()
                nursery.cancel_scope.cancel()  # the watchdog
        finally:
            if proc is not None:
                self._forget(slot, proc)

    def _forget(self, slot: Slot, proc: WorkerProcess) -> None:
        if proc in self.live:
            self.live.discard(proc)
            if proc in slot.processes:
                slot.processes.remove(proc)
            if not proc.stop_requested:
                self.unexpected_exits += 1
            self._changed()
            self._check_idle()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _watch(self, proc: WorkerProcess) -> None:
        """Note when the process is ready, then kill it if its heartbeats stop: judged on what
        the master has read, over time the master was running (see watchdog.py)."""
        await proc.ready_event.wait()
        self.log(f"worker {proc.slot_id} (pid {proc.pid}) ready")  # as gunicorn's "Booting worker"
        self._changed()
        timeout = self.settings.timeout
        await wait_silence(lambda: proc.last_heartbeat, timeout, proc.unread_bytes)
        if proc.returncode is None:
            proc.kill_reason = f"no heartbeat for {timeout:g} s (event loop blocked?)"
            self.warn(f"worker {proc.slot_id} (pid {proc.pid}): {proc.kill_reason}")
            proc.signal(signal.SIGKILL)

    def _stop_process(self, proc: WorkerProcess) -> None:
        """Ask one process to drain (SIGTERM), and SIGKILL it after --graceful-timeout."""
        assert self._nursery is not None
        if proc.stop_requested or proc.returncode is not None:
            return
        proc.handle(ProcessEvent.STOP)
        proc.signal(signal.SIGTERM)
        self._nursery.start_soon(self._enforce_deadline, proc)

    async def _enforce_deadline(self, proc: WorkerProcess) -> None:
        with trio.move_on_after(self.settings.graceful_timeout):
            await proc.ended.wait()
            return
        if proc.returncode is not None:
            return  # it exited; only its connection or output lingered
        proc.kill_reason = f"still draining after {self.settings.graceful_timeout:g} s"
        proc.kill_kind = "drain_timeout"
        self.warn(f"worker {proc.slot_id} (pid {proc.pid}): {proc.kill_reason}; killing it")
        proc.signal(signal.SIGKILL)

    # -- operations (signals and control commands) -------------------------------------------------

    def add(self, count: int = 1, pool: str | None = None) -> list[int]:
        """Open ``count`` new slots, each taking the lowest free id; returns their ids. Raises
        TooManyWorkers, adding none, when the slots (draining ones too) would pass --max-workers."""
        assert self._nursery is not None
        if self.started:  # an operator's, not the start-up's (see startup.py)
            self.boot.operator_acted()
        if self.stopping:
            return []
        s = self.settings
        added = self._ids.take(count, draining=len(self.slots) - self.active_count())
        for slot_id in added:
            slot = Slot(
                slot_id,
                SlotLifecycle(s.backoff_base, s.backoff_cap, s.backoff_limit, s.quick_exit),
                pool,
            )
            if pool is None:
                self._open_own_sockets(slot)
            self.slots[slot_id] = slot
            self._nursery.start_soon(self._supervise, slot)
        return added

    def _open_own_sockets(self, slot: Slot) -> None:
        for bound in self._anchors:
            if bound.sock.fileno() != -1:  # -1: shut down
                try:
                    slot.own_sockets.append(slot_listener(bound.sock))
                except OSError as exc:  # fd limit, most likely: the slot serves without it
                    self.warn(f"worker {slot.id}: cannot listen on {bound.address}: {exc}")

    def remove(self, slot_ids: Iterable[int]) -> list[int]:
        """Retire slots gracefully: their workers drain and are not replaced."""
        removed = []
        for slot_id in slot_ids:
            slot = self.slots.get(slot_id)
            if slot is None or slot.retiring:
                continue
            self._apply(slot, SlotEvent.RETIRED)
            removed.append(slot_id)
        return removed

    def highest_slots(self, count: int, pool: str | None = None) -> list[int]:
        active = sorted(
            (s.id for s in self.slots.values() if not s.retiring and s.pool == pool), reverse=True
        )
        return active[:count]

    def scale(self, target: int, pool: str | None = None) -> tuple[list[int], list[int]]:
        active = [s for s in self.slots.values() if not s.retiring and s.pool == pool]
        if target > len(active):
            return self.add(target - len(active), pool), []
        return [], self.remove(self.highest_slots(len(active) - target, pool))

    @property
    def boot_timeout(self) -> float:
        """How long a rolling restart waits for a replacement to be ready (boot is otherwise
        not timed: a slow import is not a hang)."""
        return max(self.settings.timeout, 5.0)

    async def restart(self, slot_ids: Iterable[int] | None = None) -> list[int]:
        """Rolling restart, one slot at a time: the replacement is ready before the old one
        drains. A FAILED or BACKOFF slot is simply started again. Returns the restarted ids."""
        done = []
        self.boot.operator_acted()
        async with self._restart_lock:
            for slot_id in list(slot_ids if slot_ids is not None else sorted(self.slots)):
                slot = self.slots.get(slot_id)
                if slot is None or slot.retiring or self.stopping:
                    continue
                if slot.state in (SlotState.FAILED, SlotState.BACKOFF):
                    slot.failed_reason = None
                    self._apply(slot, SlotEvent.REVIVED)
                    done.append(slot_id)
                elif slot.current is not None and await self._replace(slot):
                    done.append(slot_id)
        return done

    async def _replace(self, slot: Slot) -> bool:
        """Start a replacement for the slot's current process; once it is ready, it becomes
        current and the old one drains. False if it could not take over."""
        try:
            new = await self._spawn(slot)
        except OSError as exc:
            self.warn(f"restart of worker {slot.id}: cannot start a process: {exc}")
            return False
        # Ready, ended, or boot_timeout of the master's running time with nothing unread.
        await run_within(
            self.boot_timeout, new.unread_bytes, partial(either, new.ready_event, new.ended)
        )
        if not new.ready_event.is_set() and not new.ended.is_set():
            self.warn(
                f"restart of worker {slot.id}: the replacement (pid {new.pid}) was not"
                f" ready within {self.boot_timeout:g} s; stopping it, the old one serves on"
            )
            self._stop_process(new)
            return False
        if new.ended.is_set():  # its reason, once: the worker does not print it (runtime.py)
            self.warn(f"restart of worker {slot.id}: the new process ended: {new.exit_reason}")
        if new.ended.is_set() or slot.retiring or self.stopping:
            return False  # the replacement died (the old one keeps serving), or all stop
        # Re-read: the old process may have died while the replacement booted, and the slot's
        # task may have started another one; whatever is current now is what the replacement
        # supersedes.
        old = slot.current
        if old is None or old.ended.is_set():
            # The slot's task is handling that death (maybe in backoff): it owns the slot
            # now, and this replacement would be one process too many.
            self._stop_process(new)
            return False
        slot.current = new
        slot.count_restart("restart")
        self._stop_process(old)
        return True

    def kill(self, slot_id: int, signum: int) -> int | None:
        slot = self.slots.get(slot_id)
        if slot is None or slot.current is None:
            return None
        slot.current.signal(signum)
        return slot.current.pid

    def stop(self, graceful: bool = True) -> None:
        """Stop every worker: drain (graceful) or SIGKILL now."""
        self.stopping = True
        if not graceful:
            # Those draining already (a second Ctrl-C after the first) are killed too.
            for proc in self.live:
                if proc.returncode is None:
                    if not proc.stop_requested:
                        proc.handle(ProcessEvent.STOP)
                    proc.signal(signal.SIGKILL)
        for slot in list(self.slots.values()):
            if not graceful or slot.pool is None:
                self._apply(slot, SlotEvent.RETIRED)  # drains whatever was not killed above
        self._check_idle()

    def _check_idle(self) -> None:
        if self.stopping and not self.slots and not self.live:
            self.idle.set()
        elif self.stopping and only_pools_left(self.slots.values(), self.live):
            for slot in [s for s in self.slots.values() if not s.retiring]:
                self._apply(slot, SlotEvent.RETIRED)  # the job pool stops last

    # -- what the control plane reads -------------------------------------------------------------

    def ready_count(self) -> int:
        return sum(1 for proc in self.live if proc.state is ProcessState.READY)

    def active_count(self) -> int:
        """Slots that are not being removed."""
        return sum(1 for slot in self.slots.values() if not slot.retiring)

    def snapshot(self) -> SupervisorSnapshot:
        """Every slot and live process as plain data (a removed slot appears while one of its
        processes still drains)."""
        by_slot: dict[int, list[WorkerProcess]] = {}
        for proc in sorted(self.live, key=lambda p: p.started_at):
            by_slot.setdefault(proc.slot_id, []).append(proc)
        slot_ids = sorted(set(self.slots) | set(by_slot))
        return SupervisorSnapshot(
            slots=tuple(slot_snapshot(i, self.slots.get(i), by_slot.get(i, [])) for i in slot_ids),
            respawns=self.respawns,
            stopping=self.stopping,
            pools=tuple(self.settings.pools),
        )

    # -- the task ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.add(self.settings.workers)
            for name, count in self.settings.pools.items():
                self.add(count, pool=name)
            self.started = True
            task_status.started()
            await self.idle.wait()
            nursery.cancel_scope.cancel()
