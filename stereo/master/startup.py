"""Boot errors as the master reports them: whether one ends ``stereo run`` (start-up), and each
reason told once however many workers give it. Pure: no trio; the supervisor feeds it exits.

Start-up lasts until the app has shown that it runs, or an operator acted on the workers (``add``,
``scale``, SIGTTIN, a restart, SIGHUP). The app has shown it runs once a worker that became ready
ended other than by a boot error (a crash, a kill, a drain), or stayed ready ``settle`` seconds
(the slots' quick-exit time, after which an exit no longer counts as a crash loop either).

A boot error during start-up (exit 4: the app cannot be imported, its lifespan startup failed,
it has no listener to serve on) ends ``stereo run``: every worker loads the same code, so the
first one to fail speaks for all, as gunicorn reasons; the alternative is a master holding the
port with no worker while clients hang. A worker may have said READY just before its boot error
(a ``serve()`` that finds no listener): being ready a moment proves nothing, hence ``settle``.
Later, a boot error only fails its slot (after a bad deploy the others serve on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from .. import exitcodes


class Process(Protocol):
    """What is read of a worker process (:class:`~stereo.master.process.WorkerProcess` is one)."""

    @property
    def returncode(self) -> int | None: ...
    @property
    def ready_at(self) -> float | None: ...  # on the trio clock; None: it never said READY


class BootReports:
    """Whether the start-up is still on, and the reason that ended it, if a boot error did."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.starting = True
        #: Why the app cannot boot, once a boot error ended the start-up (then the master stops).
        self.failure: str | None = None

    def operator_acted(self) -> None:
        """Workers started on an operator's request: their boot errors fail their slots only."""
        self.starting = False

    def exited(self, now: float, ended: Process, reason: str, live: Iterable[Process]) -> bool:
        """A slot's current process ``ended`` at ``now``, for ``reason``, leaving ``live``. True
        if that ended the start-up with a boot error: the app cannot boot, and :attr:`failure`
        says why."""
        if not self.starting:
            return False
        boot_error = reason if ended.returncode == exitcodes.APP_LOAD_ERROR else None
        settled = now - self.settle
        proven = ended.ready_at is not None and (boot_error is None or ended.ready_at <= settled)
        if proven or any(p.ready_at is not None and p.ready_at <= settled for p in live):
            self.starting = False
            return False
        if boot_error is None:
            return False
        self.starting = False
        self.failure = boot_error
        return True


def tell_once(slot_id: int, exit_reason: str, status: str, failed: Mapping[int, str | None]) -> str:
    """How to report that slot ``slot_id`` failed with ``exit_reason`` (its exit ``status`` and
    what the worker said, such as why the app cannot load), given the ``failed`` reasons of the
    slots: by reference to a slot still failed for the same reason, else in full. One reason, N
    workers, told once (told again once an operator revived those slots)."""
    if exit_reason != status:
        for other, reason in sorted(failed.items()):
            if other != slot_id and reason == exit_reason:
                return f"{status}, as worker {other}"
    return exit_reason
