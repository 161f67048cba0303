"""Master upgrade without downtime (SIGUSR2): a new master, running the code installed now, takes
over the listening sockets, the workers' job and the control socket from the running master.

::

    old master                                      new master (`python -m stereo <same args>`)
    SIGUSR2: spawn the new master with the
    listening fds (pass_fds, STEREO_INHERIT_FDS)
    and a pipe's write end (STEREO_UPGRADE_FD) ---> adopts the sockets as they are (binds nothing)
      |  its workers keep serving                  starts its own workers: the new app code
      |                                            every worker READY? then it replaces the
      |                                            control socket file and owns the unix socket
      | <------------------------------- "ready\\n"  files from now on
    stops owning the unix socket files,
    drains its workers (SIGTERM), exits 0          serves on

    EOF on the pipe without "ready" (a new worker exited before every worker was ready, or the new
    master died): the upgrade failed; the old master serves on and the new one drains and exits.

A stop (SIGTERM, SIGINT, SIGQUIT, ``shutdown``) is never lost on the way:

- the old master, told to stop before it read "ready", passes it on (SIGTERM if graceful, SIGQUIT
  if quick: the new master stops as it would and never takes over) and exits only once the new
  master has (killed past its --graceful-timeout and 10 s more), so no master is left holding a
  socket. Told after "ready", it is stepping aside already: the stop concerns its own drain only.
- the new master, told to stop before it took over, cancels the upgrade: EOF, as above.
- a dead old master (SIGKILL) tells nothing: the new master finds the pipe without a reader when it
  takes over and serves alone, as it would have a moment later (the old workers follow their master
  out), and says so.

The sockets are never closed in between: the kernel queues connections on them whichever master's
workers accept, and the old workers only stop accepting once the new ones are ready. The new master
runs in its own session (no controlling terminal: a terminal's Ctrl-C, hang-up or job control
signals reach neither it nor its workers) and writes to the old master's stdout and stderr.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import Protocol

import trio

from .. import exitcodes
from ..errors import BindError, StereoError
from .binds import Bind, BoundSocket, FdBind, UnixBind
from .supervisor import Supervisor
from .workdir import launch_dir


class Host(Protocol):
    """What an upgrade needs of a master (:class:`stereo.master.master.Master` is one)."""

    sockets: list[BoundSocket]
    supervisor: Supervisor

    def log(self, line: str) -> None: ...
    def shutdown(self, graceful: bool = True) -> None: ...


ENV_FDS = "STEREO_INHERIT_FDS"  # listening descriptors, in the old master's order
ENV_NOTIFY = "STEREO_UPGRADE_FD"  # write end of the pipe the new master says "ready" on
ENV_FROM = "STEREO_UPGRADE_FROM"  # the old master's pid, for the logs
ENV_WORKERS = "STEREO_UPGRADE_WORKERS"  # workers the old master ran (it may have been scaled)

#: How long the new master's workers get to be ready before the upgrade is abandoned.
READY_TIMEOUT = 60.0
READY = b"ready\n"


class Handover:
    """The new master's side: what the old master passed on, taken out of the environment so
    that workers (and a later upgrade) do not see it."""

    def __init__(self, fds: list[int], notify_fd: int, old_pid: int, workers: int | None) -> None:
        self.fds = fds
        self.notify_fd: int | None = notify_fd
        self.old_pid = old_pid
        self.workers = workers
        self.done = False
        self.on_takeover: Callable[[], None] | None = None  # e.g. rewrite the --pid file

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Handover | None:
        fds_text = environ.pop(ENV_FDS, None)
        notify_text = environ.pop(ENV_NOTIFY, None)
        from_text = environ.pop(ENV_FROM, "0")
        workers_text = environ.pop(ENV_WORKERS, "")
        if fds_text is None or notify_text is None:
            return None
        try:
            fds = [int(fd) for fd in fds_text.split(",") if fd]
            return cls(
                fds,
                int(notify_text),
                int(from_text),
                int(workers_text) if workers_text.isdigit() else None,
            )
        except ValueError:
            raise BindError(f"${ENV_FDS}={fds_text!r}, ${ENV_NOTIFY}={notify_text!r}") from None

    def adopt_sockets(self, binds: Sequence[Bind]) -> list[BoundSocket]:
        """The old master's listening sockets, in its order (its --bind list, then systemd's).
        Unix socket files stay the old master's to remove until :meth:`complete`."""
        adopted: list[BoundSocket] = []
        for index, fd in enumerate(self.fds):
            bind = binds[index] if index < len(binds) else FdBind(fd)
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise BindError(f"inherited {bind} (fd {fd}): {exc.strerror}") from None
            if isinstance(bind, UnixBind) and sock.getsockname() != bind.path:
                # The --bind list changed since (a config file edited before SIGUSR2): this is
                # not that file, and removing that file at exit would be removing someone else's.
                bind = FdBind(fd)
            adopted.append(BoundSocket(bind, sock, None))
        return adopted

    async def wait_workers_ready(self, master: Host, control_path: str | None) -> bool:
        """Wait until every slot's worker is READY, then take the control socket over; False
        (and a graceful stop of this master) if a worker exits first or time runs out, or if
        this master was told to stop meanwhile (the old master may have passed its own stop on)."""
        supervisor = master.supervisor
        target = len(supervisor.slots)
        reason = f"not every worker was ready within {READY_TIMEOUT:g} s"
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                # A stop wakes us too: the processes it stops end, or their slots go.
                if supervisor.stopping:
                    master.log(
                        f"upgrade cancelled: told to stop before taking over from master pid"
                        f" {self.old_pid}"
                    )
                    self._close_notify()
                    return False
                if supervisor.unexpected_exits:
                    reason = "a new worker exited before every worker was ready"
                    break
                if supervisor.ready_count() >= target:
                    # The takeover: from here on, a stop this master is told of stops the service.
                    self._take_control_path(control_path)
                    return True
                await supervisor.changed.wait()
        if self._old_master_gone():
            master.log(
                f"upgrade abandoned: {reason}; master pid {self.old_pid} has exited, so no"
                " master serves any more"
            )
        else:
            master.log(f"upgrade abandoned: {reason}; master pid {self.old_pid} serves on")
        self._close_notify()  # EOF without "ready": the old master knows
        master.shutdown(graceful=True)
        return False

    def _take_control_path(self, path: str | None) -> None:
        # The old master's socket file goes; ours is bound in its place. The old master only
        # removes the file at that path if it is still its own (same inode).
        if path is not None:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)

    def complete(self, master: Host) -> None:
        """Tell the old master to go; from now on this master removes unix socket files."""
        for bound in master.sockets:
            if isinstance(bound.bind, UnixBind):
                bound.created_path = bound.bind.path
        alone = self._old_master_gone()
        if self.notify_fd is not None and not alone:
            with contextlib.suppress(OSError):  # it died just now: nothing to tell
                os.write(self.notify_fd, READY)
        self._close_notify()
        self.done = True
        if self.on_takeover is not None:
            try:
                self.on_takeover()
            except StereoError as exc:
                master.log(f"after the takeover: {exc}")
        ready = f"{len(master.supervisor.slots)} workers ready"
        if alone:
            master.log(
                f"took over from master pid {self.old_pid}, which had already exited: {ready};"
                " this master serves alone"
            )
        else:
            master.log(f"took over from master pid {self.old_pid}: {ready}")

    def _old_master_gone(self) -> bool:
        """True once the old master exited (killed, say): nobody holds the pipe's read end any
        more, and the write end polls as an error. Nothing else tells us: we never read."""
        if self.notify_fd is None:
            return False
        poller = select.poll()
        poller.register(self.notify_fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))

    def _close_notify(self) -> None:
        if self.notify_fd is not None:
            os.close(self.notify_fd)
            self.notify_fd = None


class Upgrader:
    """The old master's side: start the new master, wait for its word, then step aside.

    A stop this master is told to do (SIGTERM, SIGINT, SIGQUIT, ``shutdown``) before the new
    master's word came is passed on to the new master, and this master exits only after it:
    otherwise the new master would take over a service that was asked to stop."""

    def __init__(
        self,
        master: Host,
        argv: Sequence[str] | None,
        handover: Handover | None = None,
        *,
        stop_timeout: float = 30.0,
    ) -> None:
        self.master = master
        self.argv = list(argv) if argv is not None else None
        self.handover = handover  # set when this master is itself a new one taking over
        self.stop_timeout = stop_timeout  # for a new master told to stop, then it is killed
        self.process: trio.Process | None = None
        self._under_way = False
        self._handed_over = False
        self._successor: int | None = None  # the new master's pid, once it has taken over
        self._graceful: bool | None = None  # the stop this master was told to do, if any
        self._stop_scope = trio.CancelScope()
        self._ended = trio.Event()

    def stop(self, graceful: bool) -> None:
        """This master is stopping: a new master that has not taken over stops too."""
        if self._successor is not None:
            self.master.log(
                f"master pid {self._successor} took over and serves on; only this master stops"
            )
        if not self._under_way or self._handed_over:
            return
        graceful = graceful and self._graceful is not False  # never graceful after quick
        if graceful == self._graceful:
            return  # passed on already, or will be once the new master has started
        self._graceful = graceful
        if self.process is not None:  # else it is being started: _upgrade() passes it on
            self._pass_stop_on(self.process)

    def _pass_stop_on(self, process: trio.Process) -> None:
        signum = signal.SIGTERM if self._graceful else signal.SIGQUIT
        self.master.log(
            f"upgrade cancelled: stopping new master pid {process.pid} too ({signum.name})"
        )
        process.send_signal(signum)
        self._stop_scope.deadline = min(
            self._stop_scope.deadline, trio.current_time() + self.stop_timeout
        )

    async def wait(self) -> None:
        """Return once no upgrade is under way, or the new master has taken over."""
        if self._under_way:
            await self._ended.wait()

    async def run(self) -> None:
        master = self.master
        log = master.log
        if self.argv is None:
            log("SIGUSR2 ignored: this master was not started by `stereo run`")
            return
        if master.supervisor.stopping:
            log("SIGUSR2 ignored: stopping")
            return
        if self._under_way or (self.handover and not self.handover.done):
            log("SIGUSR2 ignored: an upgrade is already under way")
            return
        self._under_way = True
        self._stop_scope = trio.CancelScope()
        self._ended = trio.Event()
        try:
            await self._upgrade()
        finally:
            self._under_way = False
            self.process = None
            self._ended.set()

    async def _upgrade(self) -> None:
        assert self.argv is not None
        master = self.master
        log = master.log
        fds = [bound.sock.fileno() for bound in master.sockets]
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env[ENV_FDS] = ",".join(str(fd) for fd in fds)
        env[ENV_NOTIFY] = str(write_fd)
        env[ENV_FROM] = str(os.getpid())
        env[ENV_WORKERS] = str(master.supervisor.active_count())
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "stereo", *self.argv],
                env=env,
                pass_fds=(write_fd, *fds),
                stdin=subprocess.DEVNULL,
                cwd=launch_dir(),  # where this master started: a relative --chdir holds again
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_fd)
            log(f"SIGUSR2: cannot start a new master: {exc}")
            return
        finally:
            os.close(write_fd)
        self.process = process
        log(
            f"SIGUSR2: started new master pid {process.pid}; it takes over once its workers are"
            " ready"
        )
        with self._stop_scope:
            if self._graceful is not None:  # told to stop while the new master was starting
                self._pass_stop_on(process)
            with trio.move_on_after(READY_TIMEOUT + 10) as ready_wait:
                message = await _read_word(read_fd)
            # No checkpoint from reading "ready" to this test: a stop is either passed on
            # above or comes after the handover.
            if message == READY and self._graceful is None:
                self._handed_over = True
                log(f"upgrade: new master pid {process.pid} is serving; stopping gracefully")
                for bound in master.sockets:
                    bound.created_path = None  # the socket files are the new master's now
                master.shutdown(graceful=True)
                self._successor = process.pid
                return  # the new master outlives us: never wait for it
            if ready_wait.cancelled_caught:
                log(f"upgrade: new master pid {process.pid} silent for too long; killing it")
                process.kill()
            await process.wait()
        if process.returncode is None:  # told to stop, and it did not in time
            log(
                f"upgrade: new master pid {process.pid} still running {self.stop_timeout:g} s"
                " after it was told to stop; killing it"
            )
            process.kill()
        code = await process.wait()
        ended = exitcodes.describe(code) if code < 0 else f"exit {code}"
        if self._graceful is not None:
            log(f"upgrade cancelled: new master pid {process.pid} ended ({ended})")
        else:
            log(
                f"upgrade failed: new master pid {process.pid} ended ({ended})"
                " before taking over; this master serves on"
            )


async def _read_word(fd: int) -> bytes:
    """What the new master writes on the pipe before it closes it: READY, or nothing."""
    message = b""
    async with trio.lowlevel.FdStream(fd) as pipe:
        while not message.endswith(b"\n") and len(message) < len(READY):
            chunk = await pipe.receive_some(len(READY))
            if not chunk:
                break
            message += chunk
    return message
