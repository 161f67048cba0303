"""One worker process: its record (:class:`WorkerProcess`) and the task that runs it
(:class:`Launcher`), a child process as a trio task, as ``trio.run_process`` is.

The task starts ``python -m stereo.worker`` with the worker's end of a hub socketpair and the
listening sockets, serves the master's end through the hub, pumps the child's output lines to
the sink, and reports the exit on the record. The record is all the supervisor sees; it is also
what the hub connection reports to (:class:`stereo.master.peer.PeerEvents`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from .. import exitcodes
from ..snapshot import PeerStatistics, ProcessSnapshot
from .hub import Hub
from .lifecycle import ProcessEvent, ProcessState, process_after
from .output import STDERR, STDOUT, OutputSink, WorkerSource, pump_lines
from .peer import Peer
from .privileges import INHERIT, SpawnOptions

# How long a dead worker's pipes may stay open (held by its own children) before we stop reading.
OUTPUT_LINGER = 1.0
HUB_SOCKET_BUFFER = 1024 * 1024  # SO_SNDBUF of both ends of a hub connection
_NO_TRAFFIC = PeerStatistics(0, 0, 0, 0, 0, 0, None)
# Signals that end a process from outside; SIGSEGV, SIGABRT and the like are the app's own crash.
_ENDING_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

#: The ``reason`` label of stereo_worker_restarts_total (docs/observability.md): why a slot's
#: process was replaced. "restart" is a rolling restart (ctl restart, SIGHUP, --reload).
RESTART_REASONS = (
    "crash",  # the app exited by itself, with an error or a signal of its own
    "exit",  # the app exited by itself with status 0
    "load_error",  # the app could not be loaded
    "boot_error",  # the worker reported an error while starting
    "killed",  # a signal from outside stereo (kill -9, the OOM killer)
    "hang",  # no heartbeat: the master killed it
    "slow_consumer",  # the hub cut it off: its outbox overflowed, or the bridge reset
    "protocol",  # the hub cut it off for breaking the hub protocol
    "drain_timeout",  # a stopping process killed after --graceful-timeout
    "restart",
)


class WorkerProcess:
    """What the master knows of one worker process. Its exit is reported with :meth:`exited`."""

    def __init__(
        self,
        slot_id: int,
        pid: int,
        send_signal: Callable[[int], None],
        welcome: Callable[[], dict[str, Any]],
    ) -> None:
        self.slot_id = slot_id
        self.pid = pid
        self._send_signal = send_signal
        self._welcome = welcome
        self.peer: Peer | None = None  # its hub connection (None for a fake, in tests)
        self.state = ProcessState.STARTING
        self.started_at = trio.current_time()
        self.started_wall = time.time()
        self.ready_at: float | None = None
        self.last_heartbeat = self.started_at
        self.returncode: int | None = None
        self.boot_error_reason: str | None = None
        self.kill_reason: str | None = None  # why the master killed it, if it did
        self.kill_kind = "hang"  # with kill_reason: its RESTART_REASONS label
        self.ready_event = trio.Event()
        self.ended = trio.Event()  # it exited and its hub connection was read to the end

    def handle(self, event: ProcessEvent) -> None:
        self.state = process_after(self.state, event)

    @property
    def stop_requested(self) -> bool:
        return self.state in (ProcessState.DRAINING, ProcessState.STOPPED)

    @property
    def uptime(self) -> float:
        return trio.current_time() - self.started_at

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._send_signal(signum)

    def exited(self, returncode: int) -> None:
        """The OS reaped it (its hub connection may still hold unread broadcasts)."""
        self.returncode = returncode
        self.handle(ProcessEvent.EXIT)

    def unread_bytes(self) -> int:
        """Bytes the worker sent that the master has not read yet (evidence not yet seen)."""
        return 0 if self.peer is None else self.peer.unread_bytes()

    @property
    def killed_from_outside(self) -> bool:
        """It died of a signal that ends processes and that stereo did not send (the OOM
        killer, an operator's kill -9), or the hub cut it off as a slow consumer: not a crash
        of the app's own."""
        if self.kill_reason is not None or self.returncode is None:
            return False
        slow = self.peer is not None and self.peer.cut_off_slow
        return slow or -self.returncode in _ENDING_SIGNALS

    @property
    def restart_reason(self) -> str:
        """Why it is gone, as one of RESTART_REASONS (for metrics; exit_reason says it in full)."""
        if self.kill_reason is not None:
            return self.kill_kind
        if self.peer is not None and self.peer.cut_off_reason is not None:
            return "slow_consumer" if self.peer.cut_off_slow else "protocol"
        if self.returncode == exitcodes.APP_LOAD_ERROR:
            return "load_error"
        if self.boot_error_reason is not None:
            return "boot_error"
        if self.killed_from_outside:
            return "killed"
        return "exit" if self.returncode == 0 else "crash"

    def snapshot(self, current: bool) -> ProcessSnapshot:
        return ProcessSnapshot(
            pid=self.pid,
            state=self.state.value,
            current=current,
            started_at=self.started_at,
            started_wall=self.started_wall,
            ready_at=self.ready_at,
            stop_requested=self.stop_requested,
            last_heartbeat=self.last_heartbeat,
            boot_error=self.boot_error_reason,
            hub=_NO_TRAFFIC if self.peer is None else self.peer.statistics(),
            jobs=None if self.peer is None or self.peer.pool is None else self.peer.job_counts(),
        )

    # -- PeerEvents: what its hub connection reports ----------------------------------------------

    def welcome(self) -> dict[str, Any]:
        return self._welcome()

    def ready(self) -> None:
        self.last_heartbeat = trio.current_time()
        if self.state is ProcessState.STARTING:
            self.ready_at = self.last_heartbeat
            self.handle(ProcessEvent.READY)
        self.ready_event.set()

    def heartbeat(self) -> None:
        self.last_heartbeat = trio.current_time()

    def boot_error(self, reason: str) -> None:
        self.boot_error_reason = reason

    @property
    def exit_reason(self) -> str:
        if self.returncode is None:
            return ""
        reason = exitcodes.describe(self.returncode)
        cut_off = self.peer.cut_off_reason if self.peer is not None else None
        if self.kill_reason:
            reason = f"{self.kill_reason}; {reason}"
        elif cut_off:
            reason = f"cut off: {cut_off}; {reason}"
        if self.boot_error_reason:
            reason = f"{reason}: {self.boot_error_reason}"
        truncated = self.peer.truncated_bytes if self.peer is not None else 0
        if truncated:
            reason = f"{reason}; its connection ended inside a frame ({truncated} bytes dropped)"
        return reason


async def _kill_now(process: trio.Process) -> None:
    """deliver_cancel for workers: only used when the master itself is being torn down."""
    process.kill()
    await process.wait()


def hub_socketpair() -> tuple[socket.socket, socket.socket]:
    """The master's end and the child's end of a new hub connection."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in (parent, child):
        # Room for a 1 MiB broadcast in flight: with the 208 KiB default, a big message
        # crosses each hop in several wake-ups of the reader (the kernel caps this at
        # net.core.wmem_max).
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HUB_SOCKET_BUFFER)
    return parent, child


async def start_on_hub(
    nursery: trio.Nursery,
    module: str,
    child: socket.socket,
    extra_fds: Sequence[int] = (),
    *,
    capture: bool,
    spawn: SpawnOptions = INHERIT,
) -> trio.Process:
    """Start ``python -m module`` in ``nursery`` with ``child`` as its hub connection (and
    ``extra_fds``); its stdout and stderr piped to us if ``capture``, else shared with ours;
    as ``spawn``'s user and group, with its umask (--user, --group, --umask). Cancelling the
    nursery kills it."""
    env = dict(os.environ, STEREO_HUB_FD=str(child.fileno()))
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    output = subprocess.PIPE if capture else None
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [sys.executable, "-m", module],
            check=False,
            deliver_cancel=_kill_now,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=(child.fileno(), *extra_fds),
            env=env,
            # Own process group: Ctrl-C in the terminal reaches the master only.
            process_group=0,
            **spawn.popen_options(),
        )
    )
    return process


class Launcher:
    """Starts real worker processes; :meth:`run` is one process's task."""

    def __init__(
        self,
        hub: Hub,
        sink: OutputSink,
        *,
        max_message_size: int,
        handshake_timeout: float,
        welcome: Callable[[int], dict[str, Any]],
        listen_fds: Callable[[int], list[int]],
        spawn: SpawnOptions = INHERIT,
        pool_of: Callable[[int], str | None] = lambda slot_id: None,
    ) -> None:
        self.hub = hub
        self.pool_of = pool_of  # a slot of the job pool runs `python -m stereo.pool`
        self.spawn = spawn
        self.sink = sink
        self.max_message_size = max_message_size
        self.handshake_timeout = handshake_timeout
        self.welcome = welcome
        self.listen_fds = listen_fds
        # Per slot, the pids whose output is still read, oldest first: the lines of all but the
        # newest are marked old (a restart: the old process drains while the new one serves).
        self._outputs: dict[int, list[int]] = {}

    async def run(self, slot_id: int, *, task_status: trio.TaskStatus[WorkerProcess]) -> None:
        """Start one worker process for ``slot_id``; report its record as started; return once
        it exited and its connection and output were read (OSError if it cannot be started)."""
        parent, child = hub_socketpair()
        proc: WorkerProcess | None = None
        pool = self.pool_of(slot_id)
        try:
            async with trio.open_nursery() as nursery:
                process = await start_on_hub(
                    nursery,
                    "stereo.worker" if pool is None else "stereo.pool",
                    child,
                    self.listen_fds(slot_id) if pool is None else (),  # a pool listens on none
                    capture=True,
                    spawn=self.spawn,
                )
                child.close()
                proc = WorkerProcess(
                    slot_id,
                    process.pid,
                    lambda signum: process.send_signal(signal.Signals(signum)),
                    partial(self.welcome, slot_id),
                )
                peer = proc.peer = Peer(slot_id, parent, self.max_message_size, proc)
                peer.pool = pool
                output = trio.CancelScope()
                nursery.start_soon(self._pump_output, process, slot_id, output)
                nursery.start_soon(self.hub.serve_peer, peer, self.handshake_timeout)
                task_status.started(proc)
                proc.exited(await process.wait())
                # The reader may not have read the last bytes the worker wrote: let it reach EOF
                # (at once, normally) so those broadcasts are relayed, then close regardless.
                with trio.move_on_after(OUTPUT_LINGER):
                    await peer.ended.wait()
                self.hub.close_peer(peer)
                proc.ended.set()  # before the output's linger: the slot may respawn meanwhile
                # Its own children may hold the pipes open; read what is there, then give up.
                output.deadline = trio.current_time() + OUTPUT_LINGER
        finally:
            child.close()
            parent.close()
            if proc is not None:
                proc.ended.set()  # also when torn down, so nothing waits for it forever

    async def _pump_output(
        self, process: trio.Process, slot_id: int, scope: trio.CancelScope
    ) -> None:
        assert process.stdout is not None and process.stderr is not None
        pids = self._outputs.setdefault(slot_id, [])
        pids.append(process.pid)

        def old() -> bool:
            return pids[-1] != process.pid

        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    for pipe, stream in ((process.stdout, STDOUT), (process.stderr, STDERR)):
                        source = WorkerSource(
                            slot_id, process.pid, stream, old, self.pool_of(slot_id)
                        )
                        nursery.start_soon(pump_lines, pipe, source, self.sink)
        finally:
            pids.remove(process.pid)
            if not pids:
                del self._outputs[slot_id]


def first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    """The first OSError in a (nested) group: why a process could not be started (fork/exec
    failures come out of the process task's nursery wrapped in groups)."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
