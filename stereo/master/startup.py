"""Boot errors as the master reports them: whether one ends ``stereo run`` (start-up), and each
reason told once however many workers give it. Pure: no trio; the supervisor feeds it exits.

Start-up lasts until the app has shown that it runs, or an operator acted on the workers (``add``,
``scale``, SIGTTIN, a restart, SIGHUP). The app has shown it runs once a worker that became ready
ended other than by a boot error (a crash, a kill, a drain), or stayed ready ``settle`` seconds
(the slots' quick-exit time, after which an exit no longer counts as a crash loop either).

A boot error during start-up (exit 4: the app cannot be imported, its lifespan startup failed,
it has no listener to serve on) ends ``stereo run``: every worker loads the same code, so the
first one to fail speaks for all, as gunicorn reasons; the alternative is a master holding the
port with no worker while clients hang. Unless another worker is ready, having loaded the app
that this one could not (the code changed in between): then this slot fails alone. A worker may
have said READY just before its boot error (a ``serve()`` that finds no listener): then being
ready a moment proves nothing, for it or for the others, hence ``settle``. Later, a boot error
only fails its slot (after a bad deploy the others serve on).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .. import exitcodes


class Process(Protocol):
    """What is read of a worker process (:class:`~stereo.master.process.WorkerProcess` is one)."""

    @property
    def returncode(self) -> int | None: ...
    @property
    def ready_at(self) -> float | None: ...  # on the trio clock; None: it never said READY
    @property
    def boot_error_reason(self) -> str | None: ...  # what it said in BOOT_ERROR
    @property
    def exit_reason(self) -> str: ...  # its status, and any reason it gave


class FailedSlot(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def failed_reason(self) -> str | None: ...  # the exit_reason that failed it, if it failed


def status_of(proc: Process) -> str:
    """Its exit status alone, e.g. ``exit 4 (app load error)``."""
    return exitcodes.describe(proc.returncode if proc.returncode is not None else 0)


class BootReports:
    """Whether the start-up is still on, and the reason that ended it, if a boot error did."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.starting = True
        #: Why the app cannot boot, once a boot error ended the start-up (then the master stops).
        self.failure: str | None = None

    def operator_acted(self) -> None:
        """From now on boot errors fail their slots only: an operator acted on the workers (or
        this master takes over from another, whose upgrade has its own rule, or --reload waits
        for the next save)."""
        self.starting = False

    def exited(self, now: float, ended: Process, live: Iterable[Process]) -> bool:
        """A slot's current process ``ended`` at ``now``, leaving ``live``. True if that ended
        the start-up with a boot error: the app cannot boot, and :attr:`failure` says why."""
        if not self.starting:
            return False
        load_error = ended.returncode == exitcodes.APP_LOAD_ERROR
        settled = now - self.settle
        ready = [p.ready_at for p in live if p.ready_at is not None]
        proven = ended.ready_at is not None and (not load_error or ended.ready_at <= settled)
        if proven or any(ready_at <= settled for ready_at in ready):
            self.starting = False
            return False
        if not load_error or (ready and ended.ready_at is None):
            # Not a boot error; or one at loading while another worker loaded the app and is
            # ready (the code changed in between?): the app may run, its slot fails alone.
            return False
        self.starting = False
        self.failure = ended.boot_error_reason or status_of(ended)
        return True


def tell_once(slot_id: int, proc: Process, slots: Iterable[FailedSlot], stopping: bool) -> str:
    """How to report that ``proc`` failed slot ``slot_id``: by reference to another slot still
    failed for the same reason, else in full (one reason, N workers: told once; told again once
    an operator revived those slots). ``stopping``: the master stops, nothing will restart."""
    reason = proc.exit_reason
    if reason != status_of(proc):  # more than a bare status, which is shorter than a reference
        same = sorted(s.id for s in slots if s.id != slot_id and s.failed_reason == reason)
        if same:
            reason = f"{status_of(proc)}, as worker {same[0]}"
    return reason if stopping else f"{reason}; not restarting (fix it, then `restart`)"
