"""--reload, for development: watch the app's files and restart every worker, one at a time,
when one changes.

Changes come from watchfiles' ``awatch`` (inotify, in a thread, under trio through anyio). Which
files count is :class:`ReloadFilter`'s (pure). A change triggers the supervisor's rolling restart,
as SIGHUP does, slot by slot: each replacement must be ready before the old worker drains. If a
replacement cannot start (the new code does not import), the restart stops there and says so
once: every worker keeps running the code it has, and the next change tries again. A slot that
had failed or was backing off is started at once by that restart, its backoff forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

import trio

from .config import Settings
from .lifecycle import SlotState

# As uvicorn's: Python sources, but not hidden files, bytecode, editor swap or backup files.
DEFAULT_INCLUDE = ("*.py",)
DEFAULT_EXCLUDE = (".*", ".py[cod]", ".sw.*", "~*")
SHOWN_NAMES = 3  # changed files named in the log line


@dataclass(frozen=True, slots=True)
class ReloadFilter:
    """Which changed paths restart the workers: under one of ``roots``, matching an ``include``
    pattern (on its name, or on its path from the root for a pattern with a ``/``), with no
    directory on its way from the root matching an ``exclude`` pattern (``.*`` leaves ``.git/``
    and ``.venv/`` out whole), and its name matching none either, unless a pattern the user gave
    includes it (``--reload-include .env`` beats the default ``.*``)."""

    roots: tuple[Path, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    given_include: tuple[str, ...] = ()
    given_exclude: tuple[str, ...] = ()

    @classmethod
    def from_options(
        cls, roots: Iterable[str], include: Sequence[str], exclude: Sequence[str]
    ) -> ReloadFilter:
        """As uvicorn: a default pattern given on the other side is dropped (``--reload-exclude
        '*.py'`` drops ``*.py``)."""
        return cls(
            roots=tuple(Path(root).resolve() for root in roots),
            include=_merge(DEFAULT_INCLUDE, include, dropped=exclude),
            exclude=_merge(DEFAULT_EXCLUDE, exclude, dropped=include),
            given_include=tuple(include),
            given_exclude=tuple(exclude),
        )

    def relative(self, path: str) -> PurePath | None:
        """``path`` from the root it is under; None if under none."""
        pure = PurePath(path)
        for root in self.roots:
            if pure.is_relative_to(root):
                return pure.relative_to(root)
        return None

    def wants(self, path: str) -> bool:
        rel = self.relative(path)
        if rel is None or not rel.parts:
            return False
        included = [pattern for pattern in self.include if rel.match(pattern)]
        if not included:
            return False
        directories = [PurePath(*rel.parts[:end]) for end in range(1, len(rel.parts))]
        if any(d.match(pattern) for d in directories for pattern in self.exclude):
            return False
        chosen = any(pattern in self.given_include for pattern in included)
        excludes = self.given_exclude if chosen else self.exclude
        return not any(rel.match(pattern) for pattern in excludes)

    def __call__(self, _change: object, path: str) -> bool:
        """watchfiles' ``watch_filter``."""
        return self.wants(path)


def _merge(
    defaults: Sequence[str], given: Sequence[str], dropped: Sequence[str]
) -> tuple[str, ...]:
    kept = [pattern for pattern in defaults if pattern not in dropped]
    return tuple(dict.fromkeys([*kept, *given]))


def describe_changes(paths: Iterable[str], flt: ReloadFilter) -> str:
    """``app.py, lib/x.py and 2 more`` (pure)."""
    names = sorted({str(flt.relative(path) or path) for path in paths})
    shown = ", ".join(names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


class _Process(Protocol):
    @property
    def ready_event(self) -> trio.Event: ...
    @property
    def ended(self) -> trio.Event: ...


class _Slot(Protocol):
    @property
    def retiring(self) -> bool: ...
    @property
    def state(self) -> SlotState: ...
    @property
    def current(self) -> _Process | None: ...


class Restarter(Protocol):
    """What a reload needs of the supervisor (:class:`~stereo.master.supervisor.Supervisor`)."""

    @property
    def stopping(self) -> bool: ...
    @property
    def slots(self) -> Mapping[int, _Slot]: ...
    @property
    def changed(self) -> trio.Event: ...
    @property
    def boot_timeout(self) -> float: ...
    async def restart(self, slot_ids: Iterable[int] | None = None) -> list[int]: ...


class Reloader:
    """The reload task: one watcher, and one rolling restart at a time; changes made during a
    restart are gathered into the next one."""

    def __init__(
        self, flt: ReloadFilter, supervisor: Restarter, log: Callable[[str], None]
    ) -> None:
        self.filter = flt
        self.supervisor = supervisor
        self.log = log
        self._changed: set[str] = set()
        self._wake = trio.Event()

    @classmethod
    def for_settings(
        cls, settings: Settings, supervisor: Restarter, log: Callable[[str], None]
    ) -> Reloader:
        """ConfigError for a --reload-dir that is not a directory."""
        watched = ReloadFilter.from_options(
            settings.watched_dirs(), settings.reload_include, settings.reload_exclude
        )
        return cls(watched, supervisor, log)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._restart_loop)
            await self._watch(nursery)

    async def _watch(self, nursery: trio.Nursery) -> None:
        from watchfiles import awatch  # imported only with --reload

        changes = awatch(*self.filter.roots, watch_filter=self.filter)
        # awatch sets up its watches when first iterated, before its first checkpoint; a task
        # started now runs after that checkpoint, so its line means "a save from now on counts".
        nursery.start_soon(self._say_watching)
        try:
            async for batch in changes:
                self._changed.update(path for _change, path in batch)
                self._wake.set()
        except (OSError, RuntimeError) as exc:
            # The watch limit reached, a watched directory removed...: development stops
            # reloading, the service does not stop.
            self.log(f"reload: watching stopped: {exc}; restart the master to reload again")

    async def _say_watching(self) -> None:
        roots = ", ".join(str(root) for root in self.filter.roots)
        self.log(f"reload: watching {roots} ({' '.join(self.filter.include)})")

    async def _restart_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            changed, self._changed = self._changed, set()
            if self.supervisor.stopping:
                return
            self.log(
                f"reload: {describe_changes(changed, self.filter)} changed; restarting workers"
            )
            await self.restart_all()

    async def restart_all(self) -> None:
        """Replace the running workers one by one, then start the failed or backing-off slots.
        The first worker that does not start on the new code ends it (the others would fail
        the same way, each printing the same error): when no worker was running, one failed
        slot is tried, and the rest only if it comes up."""
        slots = self.supervisor.slots
        running = [i for i in sorted(slots) if slots[i].current is not None]
        down = [i for i in sorted(slots) if slots[i].current is None]
        for slot_id in running:
            if self.supervisor.stopping:
                return
            if not await self.supervisor.restart([slot_id]) and self._still_wanted(slot_id):
                self._did_not_start(slot_id, "the workers keep the code they run")
                return
        if not running and down:
            first, *down = down
            if not await self._revive(first):
                self._did_not_start(first, "its slot waits")
                return
        if down and not self.supervisor.stopping:
            await self.supervisor.restart(down)

    def _still_wanted(self, slot_id: int) -> bool:
        slot = self.supervisor.slots.get(slot_id)
        return slot is not None and not slot.retiring and not self.supervisor.stopping

    def _did_not_start(self, slot_id: int, meanwhile: str) -> None:
        self.log(
            f"reload: the new code did not start in worker {slot_id} (its error is told just"
            f" above); {meanwhile} until the next change"
        )

    async def _revive(self, slot_id: int) -> bool:
        """Start a failed or backing-off slot; whether its process came up (ready) rather than
        failing again, within the supervisor's boot timeout."""
        await self.supervisor.restart([slot_id])
        with trio.move_on_after(self.supervisor.boot_timeout):
            while self._still_wanted(slot_id):
                slot = self.supervisor.slots[slot_id]
                process = slot.current
                if process is not None and process.ready_event.is_set():
                    return True
                if process is not None and process.ended.is_set():
                    return False
                if process is None and slot.state is not SlotState.RUNNING:
                    return False  # failed again, or backing off after a crash
                await self.supervisor.changed.wait()  # a process became ready or exited
            return True  # removed or stopping: nothing to judge
        return False
