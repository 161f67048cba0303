"""The master: a few small tasks in one nursery.

- the supervisor (one task per slot, one per worker process), which also runs the hub relay;
- the signal task, the only place signals are handled;
- the output task, which prints worker lines;
- the control server, when a control socket is configured.

The listening sockets are bound before any of that starts and closed (unix socket files
removed) after all of it ended.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ..control.server import ControlServer
from ..errors import AppBootFailed, TooManyWorkers
from ..logs import LogSlice
from ..snapshot import MasterSnapshot
from ..wire.control import request_limit
from .binds import BoundSocket, close_sockets, open_sockets, systemd_fds
from .bridge import run_bridge
from .config import Settings
from .cplane import relay_plane
from .hub import Hub
from .observer import run_observer_if_possible
from .output import OutputSink, open_output
from .pidfile import PidFile
from .process import Launcher
from .reload import Reloader
from .slot import pool_of
from .supervisor import Supervisor
from .upgrade import Handover, Upgrader
from .upstream import Upstream
from .workdir import enter as enter_workdir

FINAL_FLUSH_TIMEOUT = 2.0
# A new master told to stop before it took over drains like this one; past its own
# --graceful-timeout and this much more (its start-up, its exit), it is killed.
UPGRADE_STOP_MARGIN = 10.0

HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class Master:
    """Holds the running parts together, so signal and control handlers can reach them."""

    def __init__(
        self,
        settings: Settings,
        sockets: list[BoundSocket],
        sink: OutputSink,
        argv: Sequence[str] | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.sink = sink
        self.hub = Hub(
            max_message_size=settings.max_message_size,
            outbox_limit=settings.outbox_limit,
            upstream=(
                Upstream(settings.outbox_limit, url=settings.bridge, name=settings.bridge_name)
                if settings.bridge
                else None
            ),
            relay=relay_plane(bridged=bool(settings.bridge)),
        )
        self.supervisor = Supervisor(settings, sockets, sink.log)
        # Who the workers and the bridge run as: resolved once (a user deleted later cannot
        # fail a restart), checked already by Settings.check.
        self.spawn = settings.spawn_options()
        self.supervisor.launch = Launcher(
            self.hub,
            sink,
            max_message_size=settings.max_message_size,
            handshake_timeout=max(settings.timeout, 5.0),
            welcome=self.supervisor.welcome,
            listen_fds=self.supervisor.listen_fds,
            spawn=self.spawn,
            pool_of=partial(pool_of, self.supervisor.slots),
        ).run
        self.started_at = trio.current_time()
        self.interrupts = 0
        self._nursery: trio.Nursery | None = None
        self.control: ControlServer  # set in run(), once the supervisor can take orders
        # Master upgrade (SIGUSR2, see upgrade.py): ``argv`` starts the new master; a master
        # that is the new one takes over through ``handover``.
        self.upgrader = Upgrader(
            self,
            argv,
            handover,
            stop_timeout=settings.graceful_timeout + UPGRADE_STOP_MARGIN,
        )
        self.handover = handover
        if handover is not None or settings.reload:
            # No exit at start-up for a boot error (startup.py) in an upgrade, whose new
            # workers either all start or the handover is abandoned and the old master serves
            # on (upgrade.py); nor with --reload, where the next save may fix the app.
            self.supervisor.boot.operator_acted()

    def snapshot(self) -> MasterSnapshot:
        return MasterSnapshot(
            pid=os.getpid(),
            now=trio.current_time(),
            started_at=self.started_at,
            control_path=self.settings.control_path,
            supervisor=self.supervisor.snapshot(),
            hub=self.hub.statistics(),
        )

    # -- what the control plane may do (stereo.control.commands.Target) ------------------------

    def add(self, count: int, pool: str | None = None) -> list[int]:
        return self.supervisor.add(count, pool)

    def remove(self, slot_ids: list[int]) -> list[int]:
        return self.supervisor.remove(slot_ids)

    def highest_slots(self, count: int, pool: str | None = None) -> list[int]:
        return self.supervisor.highest_slots(count, pool)

    def scale(self, workers: int, pool: str | None = None) -> tuple[list[int], list[int]]:
        return self.supervisor.scale(workers, pool)

    async def restart(self, slot_ids: list[int] | None) -> list[int]:
        return await self.supervisor.restart(slot_ids)

    def kill(self, slot_id: int, signum: int) -> int | None:
        return self.supervisor.kill(slot_id, signum)

    def broadcast(self, payload: bytes) -> int:
        return self.hub.broadcast_from_master(payload)

    def log(self, line: str) -> None:
        self.sink.log(line)

    def read_logs(self, after: int | None, ids: list[int] | None, limit: int) -> LogSlice:
        return self.sink.read_logs(after, ids, limit)

    async def wait_logs(self, after: int) -> None:
        await self.sink.wait_logs(after)

    # -- signal handlers ----------------------------------------------------------------------

    def handle_term(self) -> None:
        self.sink.log("SIGTERM: stopping gracefully")
        self.shutdown(graceful=True)

    def handle_int(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            self.sink.log("interrupted: stopping gracefully (Ctrl-C again to stop at once)")
            self.shutdown(graceful=True)
        else:
            self.sink.log("interrupted again: stopping now")
            self.shutdown(graceful=False)

    def handle_quit(self) -> None:
        self.sink.log("SIGQUIT: stopping now")
        self.shutdown(graceful=False)

    def handle_hup(self) -> None:
        self.sink.log("SIGHUP: rolling restart of every worker")
        self.start_soon(self.supervisor.restart)

    def handle_ttin(self) -> None:
        try:
            added = self.supervisor.add(1)
        except TooManyWorkers as exc:
            self.sink.log(f"SIGTTIN: not adding a worker: {exc}")
            return
        self.sink.log(f"SIGTTIN: added worker {added}")

    def handle_ttou(self) -> None:
        removed = self.supervisor.remove(self.supervisor.highest_slots(1))
        self.sink.log(f"SIGTTOU: removing worker {removed}")

    def handle_usr1(self) -> None:
        self.start_soon(self.sink.reopen)

    def handle_usr2(self) -> None:
        self.start_soon(self.upgrader.run)

    def dispatch(self, signum: int) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGHUP: self.handle_hup,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
            signal.SIGUSR2: self.handle_usr2,
        }
        handlers[signum]()

    # -- lifecycle ----------------------------------------------------------------------------

    def start_soon(self, fn: Callable[[], object]) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn)  # type: ignore[arg-type]

    async def stop_if_the_app_cannot_boot(self) -> None:
        """A boot error at start-up (see startup.py): stop, for run_master to say why."""
        await self.supervisor.boot_failed.wait()
        self.sink.log("the app cannot boot at start-up: stopping", logging.ERROR)
        self.shutdown(graceful=True)

    def shutdown(self, graceful: bool = True) -> None:
        # Close our copies of the listening sockets first: once the workers have closed theirs
        # too, new connections are refused instead of waiting in a backlog nobody accepts from.
        close_sockets(self.sockets)
        self.supervisor.stop(graceful)
        self.upgrader.stop(graceful)  # a new master still starting stops too

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.sink.run)
            nursery.start_soon(self.hub.run)
            with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:

                async def signal_task() -> None:
                    async for signum in signals:
                        self.dispatch(signum)

                nursery.start_soon(signal_task)
                for bound in self.sockets:
                    self.sink.log(f"listening on {bound.address}")
                if self.hub.upstream is not None:
                    handshake = max(self.settings.timeout, 5.0)
                    nursery.start_soon(
                        run_bridge, self.hub, self.settings, self.sink.log, handshake, self.spawn
                    )
                await nursery.start(self.supervisor.run)
                nursery.start_soon(self.stop_if_the_app_cannot_boot)
                if self.settings.reload:
                    reloader = Reloader.for_settings(self.settings, self.supervisor, self.sink.log)
                    nursery.start_soon(reloader.run)
                # Taking over from an old master: its control socket is ours only once our
                # workers serve; if they cannot, this master drains and the old one serves on.
                if self.handover is None or await self.handover.wait_workers_ready(
                    self, self.settings.control_path
                ):
                    self.control = ControlServer(
                        self,
                        path=self.settings.control_path,
                        max_request_size=request_limit(self.settings.max_message_size),
                        log=self.sink.log,
                    )
                    await nursery.start(self.control.run)
                    if self.settings.observer:
                        run_observer_if_possible(
                            nursery, self.settings, self.control.listening, self.sink.log
                        )
                    if self.handover is not None:
                        self.handover.complete(self)
                    if self.settings.console:
                        from ..control.console import run_in_place

                        nursery.start_soon(
                            partial(
                                run_in_place,
                                self.control.serve_stream,
                                self.sink.redirect,
                                stopping=lambda: self.supervisor.stopping,
                                log=self.sink.log,
                                reattach_path=self.control.listening,
                                live_output=self.sink.log_file is None,
                            )
                        )
                task_status.started()
                await self.supervisor.idle.wait()
                if self.hub.upstream is not None:
                    # The workers' last broadcasts reach the broker before the bridge goes.
                    with trio.move_on_after(self.settings.graceful_timeout):
                        await self.hub.upstream.wait_appended()
                # A new master told to stop with us ends first: none is left holding the port.
                await self.upgrader.wait()
                self.sink.log("all workers stopped; bye")
                # Let the output task print the last lines (bounded: stdout may be stuck, e.g. a
                # paused pager), then end the other tasks.
                with trio.move_on_after(FINAL_FLUSH_TIMEOUT):
                    await self.sink.flush()
                nursery.cancel_scope.cancel()


async def run_master(settings: Settings, argv: Sequence[str] | None = None) -> None:
    """Run a master until it stops. ``argv`` (the arguments after ``stereo``) lets SIGUSR2 start
    a new master with the same command line."""
    enter_workdir(settings.chdir)  # first: relative paths are taken from there
    handover = Handover.from_environ(os.environ)
    if handover is not None and handover.workers is not None:
        settings.workers = handover.workers
    settings.check()  # before anything is bound or started
    if settings.reload:
        settings.watched_dirs()
    pid_file = PidFile(settings.pid_file) if settings.pid_file else None
    # A new master (upgrade) claims nothing: its predecessor holds the file until the takeover.
    stale = pid_file.claim() if pid_file is not None and handover is None else None
    sink = open_output(settings.log_file, settings.log_format, settings.log_level)
    if handover is None:
        sockets = open_sockets(
            settings.binds, systemd_fds(os.environ, os.getpid()), settings.reuse_port
        )
    else:
        sockets = handover.adopt_sockets(settings.binds)
    try:
        if pid_file is not None and handover is None:
            pid_file.write()
        elif pid_file is not None and handover is not None:
            handover.on_takeover = pid_file.write
        master = Master(settings, sockets, sink, argv, handover)
        for note in (stale, master.spawn.describe()):
            if note:
                master.sink.log(note)
        if handover is not None:
            master.sink.log(f"taking over from master pid {handover.old_pid}")
        await master.run()
    finally:
        if pid_file is not None:
            pid_file.remove()  # only if it is still ours: not after an upgrade handed it on
        close_sockets(sockets)
    if master.supervisor.boot.failure is not None:
        raise AppBootFailed(f"the app cannot start: {master.supervisor.boot.failure}")
