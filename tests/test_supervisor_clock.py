"""The supervisor's respawn, backoff and timeout logic on trio's MockClock: fake processes that
boot, beat, crash, hang or ignore SIGTERM on a virtual clock, so seconds of supervision run in
milliseconds and every deadline is checked exactly. The real-process tests (test_faults.py,
test_runtime.py) cover the same paths with real workers."""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from stereo import exitcodes
from stereo.errors import TooManyWorkers
from stereo.master.config import Settings
from stereo.master.process import WorkerProcess
from stereo.master.slot import SlotIds
from stereo.master.supervisor import Supervisor
from stereo.master.watchdog import wait_silence


@dataclass(frozen=True)
class Behaviour:
    boot: float | None = 0.01  # seconds until READY (None: never ready)
    beats: int | None = None  # heartbeats it sends before its loop hangs (None: forever)
    crash_after: float | None = None  # exits on its own this long after its start
    code: int = 1  # ... with this status
    ignore_term: bool = False  # SIGTERM does nothing (SIGKILL always works)


@dataclass
class Spawn:
    at: float
    slot_id: int
    proc: WorkerProcess


class FakeLaunch:
    """A Launch whose processes follow ``script(slot_id, nth start of that slot)``."""

    def __init__(self, script: Callable[[int, int], Behaviour], heartbeat: float) -> None:
        self.script = script
        self.heartbeat = heartbeat
        self.spawns: list[Spawn] = []
        self.spawned = trio.Event()  # set, then replaced, at every start
        self._pids = itertools.count(1000)

    def of_slot(self, slot_id: int) -> list[Spawn]:
        return [s for s in self.spawns if s.slot_id == slot_id]

    async def __call__(self, slot_id: int, *, task_status: trio.TaskStatus[WorkerProcess]) -> None:
        behaviour = self.script(slot_id, len(self.of_slot(slot_id)))
        done = trio.Event()
        status = [0]

        def finish(code: int) -> None:
            if not done.is_set():
                status[0] = code
                done.set()

        def send_signal(signum: int) -> None:
            if signum == signal.SIGKILL:
                finish(-signal.SIGKILL)
            elif signum == signal.SIGTERM and not behaviour.ignore_term:
                finish(0)

        proc = WorkerProcess(slot_id, next(self._pids), send_signal, dict)
        self.spawns.append(Spawn(trio.current_time(), slot_id, proc))
        self.spawned.set()
        self.spawned = trio.Event()
        task_status.started(proc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._live, proc, behaviour)
            if behaviour.crash_after is not None:
                nursery.start_soon(self._crash, behaviour, finish)
            await done.wait()
            nursery.cancel_scope.cancel()
        proc.exited(status[0])
        proc.ended.set()

    async def _live(self, proc: WorkerProcess, behaviour: Behaviour) -> None:
        if behaviour.boot is None:
            return
        await trio.sleep(behaviour.boot)
        proc.ready()
        for _ in itertools.count() if behaviour.beats is None else range(behaviour.beats):
            await trio.sleep(self.heartbeat)
            proc.heartbeat()

    async def _crash(self, behaviour: Behaviour, finish: Callable[[int], None]) -> None:
        assert behaviour.crash_after is not None
        await trio.sleep(behaviour.crash_after)
        finish(behaviour.code)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    def __call__(self, line: str, level: int = 20) -> None:  # as OutputSink.log
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pattern: str, since: int = 0) -> str:
        """The first line from index ``since`` on that matches; waits for one to come."""
        while True:
            for line in self.lines[since:]:
                if re.search(pattern, line):
                    return line
            await self._changed.wait()


@asynccontextmanager
async def supervising(
    script: Callable[[int, int], Behaviour], workers: int = 1, **settings: float
) -> AsyncIterator[tuple[Supervisor, FakeLaunch, Log]]:
    config = Settings(app="fake:serve", workers=workers, **settings)  # type: ignore[arg-type]
    launch = FakeLaunch(script, config.heartbeat_interval)
    log = Log()
    supervisor = Supervisor(config, [], log, launch)
    with trio.fail_after(3600):  # virtual seconds: fails only if nothing can happen any more
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            yield supervisor, launch, log
            supervisor.stop(graceful=False)
            await supervisor.idle.wait()


def always(behaviour: Behaviour) -> Callable[[int, int], Behaviour]:
    return lambda slot_id, nth: behaviour


async def test_a_crash_loop_backs_off_exponentially_then_fails_until_revived(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crashing = Behaviour(crash_after=0.01)
    async with supervising(always(crashing), backoff_base=0.1, backoff_limit=5) as (
        supervisor,
        launch,
        log,
    ):
        await log.wait_for(r"worker 1 failed: exit 1 \(app crashed\); not restarting")
        starts = [s.at for s in launch.spawns]
        assert len(starts) == 5  # the fifth quick crash in a row gave up
        waits = [later - (earlier + 0.01) for earlier, later in itertools.pairwise(starts)]
        for wait, raw in zip(waits, [0.1, 0.2, 0.4, 0.8], strict=True):
            assert raw / 2 - 1e-9 <= wait <= raw + 1e-9  # jittered over the upper half
        slot = supervisor.snapshot().slots[0]
        assert (slot.state, slot.quick_failures, slot.processes) == ("failed", 5, ())
        await trio.sleep(600)
        assert len(launch.spawns) == 5  # FAILED stays failed: no retry behind the operator's back

        mark = len(log.lines)
        assert await supervisor.restart([1]) == [1]
        await log.wait_for(
            r"worker 1 \(pid 1005\) exited: exit 1 \(app crashed\); restarting", mark
        )
        assert len(launch.spawns) == 6
        assert supervisor.snapshot().slots[0].quick_failures == 1  # a fresh count


async def test_an_app_that_cannot_load_fails_its_slot_after_one_try(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = Behaviour(boot=None, crash_after=0.01, code=exitcodes.APP_LOAD_ERROR)
    async with supervising(always(broken), workers=2) as (supervisor, launch, log):
        # The first is the start-up's: the supervisor says so (the master stops, test_startup.py).
        first = await log.wait_for(r"worker (\d) failed at start-up: exit 4 \(app load error\)$")
        assert supervisor.boot_failed.is_set()
        other = 3 - int(first.split()[1])  # both fail at 0.01: trio picks who goes first
        await log.wait_for(rf"worker {other} failed: exit 4 \(app load error\)$")
        assert len(launch.spawns) == 2
        assert [s.state for s in supervisor.snapshot().slots] == ["failed", "failed"]


async def test_a_worker_whose_heartbeats_stop_is_killed_after_the_timeout_and_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(slot_id: int, nth: int) -> Behaviour:
        return Behaviour(beats=3) if nth == 0 else Behaviour()

    async with supervising(script, timeout=8) as (_, launch, log):
        await log.wait_for(r"worker 1 \(pid 1000\): no heartbeat for 8 s")
        hung = launch.spawns[0].proc
        # Ready at 0.01, beats every 2 s (timeout / 4): the last at 6.01, killed at 14.01.
        assert hung.last_heartbeat == pytest.approx(6.01)
        await hung.ended.wait()
        assert trio.current_time() == pytest.approx(14.01)
        assert hung.returncode == -signal.SIGKILL
        await log.wait_for(r"worker 1 \(pid 1000\) exited: no heartbeat for 8 s .*; restarting$")
        replacement = await _ready(launch, 1, 1)
        assert replacement.at == pytest.approx(14.01)  # at once: it ran longer than a quick crash


async def test_a_worker_that_ignores_sigterm_is_killed_at_the_graceful_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stubborn = Behaviour(ignore_term=True)
    async with supervising(always(stubborn), workers=2, graceful_timeout=7) as (
        supervisor,
        launch,
        log,
    ):
        draining = (await _ready(launch, 2, 0)).proc
        started = trio.current_time()
        assert supervisor.remove([2]) == [2]
        assert supervisor.remove([2]) == []  # already on its way out
        snapshot = supervisor.snapshot()
        assert [(s.id, s.state, s.retiring) for s in snapshot.slots] == [
            (1, "running", False),
            (2, "retiring", True),
        ]
        await log.wait_for(rf"worker 2 \(pid {draining.pid}\): still draining after 7 s; kill")
        await draining.ended.wait()
        assert trio.current_time() - started == pytest.approx(7)
        while 2 in supervisor.slots:
            await supervisor.changed.wait()
        assert [s.id for s in supervisor.snapshot().slots] == [1]  # removed, not replaced
        assert len(launch.spawns) == 2
        assert supervisor.add(1) == [2]  # the id is free again


async def test_a_rolling_restart_swaps_in_a_ready_replacement_then_drains_the_old_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(always(Behaviour(boot=0.5))) as (supervisor, launch, _):
        old = (await _ready(launch, 1, 0)).proc
        assert await supervisor.restart() == [1]
        new = launch.spawns[1].proc
        assert new.ready_event.is_set()
        assert old.stop_requested
        await old.ended.wait()
        assert old.state.value == "stopped"
        slot = supervisor.snapshot().slots[0]
        assert (slot.current_pid, slot.restarts) == (new.pid, 1)
        assert supervisor.respawns == 0  # a replacement, not a respawn
        assert len(launch.spawns) == 2


async def test_a_replacement_that_never_gets_ready_is_given_up_and_the_old_one_serves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(slot_id: int, nth: int) -> Behaviour:
        return Behaviour() if nth == 0 else Behaviour(boot=None)

    async with supervising(script, timeout=12) as (supervisor, launch, log):
        old = (await _ready(launch, 1, 0)).proc
        started = trio.current_time()
        assert await supervisor.restart([1]) == []
        assert trio.current_time() - started == pytest.approx(12)  # max(--timeout, 5 s)
        await log.wait_for(r"the replacement \(pid 1001\) was not ready within 12 s")
        await launch.spawns[1].proc.ended.wait()
        assert supervisor.snapshot().slots[0].current_pid == old.pid
        assert not old.stop_requested


async def _ready(launch: FakeLaunch, slot_id: int, nth: int) -> Spawn:
    """The ``nth`` process of the slot, once it is ready (slots start in any order)."""
    while len(launch.of_slot(slot_id)) <= nth:
        await launch.spawned.wait()
    spawn = launch.of_slot(slot_id)[nth]
    await spawn.proc.ready_event.wait()
    return spawn


# -- not the app's fault: retried, never FAILED ------------------------------------------------


async def test_kills_from_outside_are_retried_with_capped_backoff_never_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    oom_killed = Behaviour(crash_after=0.01, code=-signal.SIGKILL)  # as the OOM killer does
    async with supervising(always(oom_killed), backoff_limit=3, backoff_cap=0.5) as (
        supervisor,
        launch,
        log,
    ):
        await _ready(launch, 1, 9)
        assert not any("failed" in line for line in log.lines)
        slot = supervisor.snapshot().slots[0]
        assert (slot.quick_failures, slot.setbacks) == (0, 9)  # counted, not as crashes
        waits = [
            later.at - (earlier.at + 0.01) for earlier, later in itertools.pairwise(launch.spawns)
        ]
        assert max(waits) <= 0.5 + 1e-9  # capped
        assert waits[-1] >= 0.25 - 1e-9  # ... at the cap by now (jitter: upper half)


async def test_a_worker_that_cannot_be_started_is_retried_until_it_can(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Settings(app="fake:serve", workers=1, backoff_cap=2.0)
    fake = FakeLaunch(always(Behaviour()), config.heartbeat_interval)
    attempts = 0

    async def launch(slot_id: int, *, task_status: trio.TaskStatus[WorkerProcess]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 8:  # out of file descriptors for a while
            raise OSError(24, "Too many open files")
        await fake(slot_id, task_status=task_status)

    log = Log()
    supervisor = Supervisor(config, [], log, launch)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await log.wait_for(r"worker 1: cannot start a worker process: .*Too many open files")
            snapshot = supervisor.snapshot().slots[0]
            assert snapshot.state == "backoff"
            assert "Too many open files" in (snapshot.last_exit or "")  # status says why
            spawn = await _ready(fake, 1, 0)  # the shortage passed: it runs
            assert attempts == 9
            assert supervisor.snapshot().slots[0].state == "running"
            assert supervisor.snapshot().slots[0].setbacks == 8
            assert spawn.proc.state.value == "ready"
            supervisor.stop(graceful=False)


# -- a master that was not running judges nobody --------------------------------------------------


async def test_a_stalled_master_restarts_its_watchdog_windows(
    mock_clock: trio.testing.MockClock,
) -> None:
    returned: list[float] = []
    evidence = [0.0]

    async def watch() -> None:
        await wait_silence(lambda: evidence[0], 10.0, lambda: 0)
        returned.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(100)  # the master was stopped for 100 s, past every deadline
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # it was the master that did not run: no verdict
        mock_clock.jump(9.9)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []
        mock_clock.jump(0.2)  # a full window of the master's own running time, silent
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [pytest.approx(110.1)]


async def test_a_verdict_waits_for_evidence_still_unread(
    mock_clock: trio.testing.MockClock,
) -> None:
    returned: list[float] = []
    evidence = [0.0]
    unread = [64]  # a heartbeat sits in the socket, not read yet

    def read() -> int:
        if unread[0]:
            evidence[0] = trio.current_time()  # the reader gets to it: fresh evidence
            unread[0] = 0
            return 64
        return 0

    async def watch() -> None:
        await wait_silence(lambda: evidence[0], 10.0, read)
        returned.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(10.0)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # the unread heartbeat counted
        mock_clock.jump(10.0)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [pytest.approx(20.0)]


async def test_slots_are_capped_at_max_workers_counting_draining_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervising(always(Behaviour()), workers=2, max_workers=3) as (supervisor, _, _):
        with pytest.raises(TooManyWorkers, match=r"^4 workers would be over the limit of 3 \("):
            supervisor.add(2)
        assert sorted(supervisor.slots) == [1, 2]  # all or nothing
        with pytest.raises(TooManyWorkers):
            supervisor.scale(4)
        assert sorted(supervisor.slots) == [1, 2]
        assert supervisor.add(1) == [3]
        assert supervisor.remove([2]) == [2]
        # Slot 2 still drains: it still counts, so a burst of scale up/down stays bounded.
        with pytest.raises(TooManyWorkers, match=r"; 1 of them are still draining$"):
            supervisor.add(1)
        while 2 in supervisor.slots:
            await supervisor.changed.wait()
        assert supervisor.add(1) == [2]  # the lowest free id


async def test_adding_many_slots_costs_linear_time_and_takes_the_lowest_free_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    count = 30_000  # the old scan for a free id took ~count^2 / 2 steps: many seconds here
    async with supervising(always(Behaviour()), workers=0, max_workers=count) as (supervisor, _, _):
        started = time.perf_counter()
        ids = supervisor.add(count)
        elapsed = time.perf_counter() - started
        assert ids == list(range(1, count + 1))
        assert elapsed < 5, f"add({count}) took {elapsed:.1f} s"
        assert supervisor.remove([*ids[10:], 7, 3]) == [*ids[10:], 7, 3]  # no process yet
        while len(supervisor.slots) > 8:
            await supervisor.changed.wait()
        assert supervisor.add(4) == [3, 7, 11, 12]


def test_slot_ids_take_the_lowest_free_ones_within_the_limit() -> None:
    ids = SlotIds(limit=5)
    assert ids.take(3) == [1, 2, 3]
    ids.release(2)
    ids.release(1)
    assert ids.in_use == 1
    assert ids.take(3) == [1, 2, 4]
    with pytest.raises(TooManyWorkers, match=r"^6 workers would be over the limit of 5 "):
        ids.take(2)
    assert ids.take(1) == [5]
    assert ids.take(0) == []
