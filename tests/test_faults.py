"""Fault injection, end to end: hung workers, slow consumers, bad hub input, crash loops, and
restarts under load. Real `stereo run`, real processes and sockets; every wait is on an event
(an output line, a process exit) under ``trio.fail_after``.

Tests print ``MEASURE`` lines (see them with ``pytest -s``); docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import trio
from conftest import Stereo, open_stereo, wait_all_exited, wait_exited
from loadgen import LoadGenerator

from stereo.control.client import ControlClient

STARTED = r"^\[worker (\d+)\] started pid=(\d+)"


def measure(name: str, value: object) -> None:
    print(f"MEASURE {name}: {value}")


async def started(stereo: Stereo, count: int, start: int = 0) -> dict[int, int]:
    """slot -> pid of the first ``count`` processes that printed 'started' from line ``start``."""
    matches = await stereo.wait_for(STARTED, count=count, start=start)
    return {int(m[1]): int(m[2]) for m in matches}


def current_pids(stereo: Stereo) -> dict[int, int]:
    """slot -> pid of the latest process that printed 'started' in each slot."""
    pids: dict[int, int] = {}
    for line in stereo.lines:
        if match := re.match(STARTED, line):
            pids[int(match[1])] = int(match[2])
    return pids


def vm_kib(pid: int, field: str) -> int:
    """A VmRSS / VmHWM figure of /proc/PID/status, in KiB (VmHWM: the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


# -- hung worker ---------------------------------------------------------------------------------


async def test_a_hung_worker_is_killed_and_replaced_but_a_busy_one_is_not(tmp_path: Path) -> None:
    env = {"HANG_MARKER": str(tmp_path / "hung"), "BUSY_SECONDS": "3"}
    with trio.fail_after(60):
        async with open_stereo("hang:serve", "-w", "2", "--timeout", "1", env=env) as stereo:
            first = await started(stereo, 2)
            blocked = await stereo.wait_for(r"^\[worker 1\] blocking the loop at=([\d.]+)$")
            blocked_at = float(blocked[0][1])
            await stereo.wait_for(
                rf"worker 1 \(pid {first[1]}\): no heartbeat for 1 s \(event loop blocked\?\)"
            )
            detected_at = time.time()
            await stereo.wait_for(
                rf"worker 1 \(pid {first[1]}\) exited: no heartbeat for 1 s \(event loop"
                r" blocked\?\); killed by SIGKILL"
            )
            await wait_exited(first[1])
            again = await stereo.wait_for(r"^\[worker 1\] started pid=(\d+) at=([\d.]+)$", count=2)
            replaced_at = float(again[1][2])
            assert int(again[1][1]) != first[1]
            # Worker 2 spun the CPU for 3 s (three timeouts) with checkpoints: never killed.
            await stereo.wait_for(r"^\[worker 2\] busy done after")
            assert len(stereo.worker_lines(2)) == 2  # started, busy done: one process only
            busy = f"pid {first[2]}"
            said = [line for line in stereo.lines if "[stereo]" in line and busy in line]
            assert said == [f"[stereo] worker 2 (pid {first[2]}) ready"]  # nothing after that
            measure("hung worker: block -> kill logged (s)", round(detected_at - blocked_at, 2))
            replace_time = round(replaced_at - blocked_at, 2)
            measure("hung worker: block -> replacement started (s)", replace_time)
            assert replaced_at - blocked_at < 10
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


# -- slow consumer and flood ---------------------------------------------------------------------

FLOODERS = 2
FLOOD_COUNT = 40000
OUTBOX_LIMIT = 4_000_000


async def _flood(tmp_path: Path, slow: bool) -> tuple[list[dict[str, float]], Stereo, int, int]:
    """Run the flood probe (3 workers; worker 1 slow or not); returns the flooders' results, the
    master's RSS before the flood and its peak (KiB)."""
    env = {
        "FLOOD_WORKERS": str(FLOODERS + 1),
        "FLOOD_COUNT": str(FLOOD_COUNT),
        "FLOOD_SLOW": "1" if slow else "0",
        "FLOOD_MARKER": str(tmp_path / f"slow-{slow}"),
    }
    args = ("flood:serve", "-w", "3", "--outbox-limit", str(OUTBOX_LIMIT), "--timeout", "5")
    async with open_stereo(*args, env=env) as stereo:
        await started(stereo, 3)
        rss_before = vm_kib(stereo.pid, "VmRSS")
        results = await stereo.wait_for(r"^\[worker [23]\] RESULT (.*)$", count=FLOODERS)
        peak = vm_kib(stereo.pid, "VmHWM")
        if slow:
            await stereo.wait_for(
                r"worker 1 \(pid \d+\) exited: cut off: slow consumer: \d+ bytes waiting for it,"
                rf" over the {OUTBOX_LIMIT}-byte outbox limit; exit 5 \(hub connection lost\);"
                r" restarting"
            )
            await stereo.wait_for(STARTED, count=4)  # slot 1 is back
        stereo.signal(signal.SIGTERM)
        assert await stereo.wait() == 0
        return [json.loads(m[1]) for m in results], stereo, rss_before, peak


@pytest.mark.usefixtures("relay_plane")
async def test_a_slow_consumer_is_cut_off_while_the_others_keep_full_speed(tmp_path: Path) -> None:
    with trio.fail_after(100):
        fast, _, _, _ = await _flood(tmp_path, slow=False)
        slow, stereo, rss_before, peak = await _flood(tmp_path, slow=True)
    for result in fast + slow:
        # Every flooder received every flooded message, with contiguous seqs: no gap.
        assert result["received"] == FLOODERS * FLOOD_COUNT
        assert result["gaps"] == 0
    # Only worker 1 was cut off, and only in the slow run.
    assert len(re.findall(r"\] started pid=", "\n".join(stereo.lines))) == 4
    assert not any("exited" in line for line in stereo.lines if "[stereo] worker 2" in line)
    fast_rate = min(r["rate"] for r in fast)
    slow_rate = min(r["rate"] for r in slow)
    measure("flood, 3 workers, no slow consumer: msgs/s per receiver", round(fast_rate))
    measure("flood, one slow consumer cut off meanwhile: msgs/s per receiver", round(slow_rate))
    measure("master RSS before the flood (MiB)", round(rss_before / 1024, 1))
    measure("master peak RSS, slow consumer, 4 MB outbox limit (MiB)", round(peak / 1024, 1))
    # Throughput: same order of magnitude (other jobs share this machine, hence the margin).
    assert slow_rate > fast_rate / 4
    # Memory: the slow worker's backlog is bounded by --outbox-limit, not by the flood volume
    # (FLOODERS x FLOOD_COUNT x ~90 bytes = 7 MB here).
    assert (peak - rss_before) * 1024 < 2 * OUTBOX_LIMIT + 16 * 1024 * 1024


# -- a worker's own memory -----------------------------------------------------------------------

BIG = 256 * 1024  # bytes per broadcast
BIG_COUNT = 256  # 64 MiB in all: eight times the default --inbox-limit
BIG_OUTBOX_LIMIT = 8 * 1024 * 1024
DEFAULT_INBOX_LIMIT = 8 * 1024 * 1024


def memory_bound(inbox_limit: int) -> int:
    """How much a worker may grow holding ``inbox_limit`` bytes of these broadcasts: decoded,
    byte strings take as much as their encoding; the allocator adds up to a quarter (measured),
    and the read that passed the limit (256 KiB, or a frame) and its decoding come on top."""
    return inbox_limit * 3 // 2 + 4 * 1024 * 1024


@pytest.mark.parametrize("inbox_limit", [None, 4 * 1024 * 1024], ids=["default", "4MiB"])
@pytest.mark.usefixtures("relay_plane")
async def test_an_iterator_never_read_holds_inbox_limit_bytes_then_its_worker_is_cut_off(
    tmp_path: Path, inbox_limit: int | None
) -> None:
    # Worker 1 keeps one iterator it never reads while 64 MiB of large broadcasts arrive: it
    # holds at most --inbox-limit bytes of them (plus a read), stops reading, and once
    # --outbox-limit bytes wait for it in the master it is cut off, like any slow consumer.
    env = {
        "BIGFLOOD_COUNT": str(BIG_COUNT),
        "BIGFLOOD_SIZE": str(BIG),
        "BIGFLOOD_MARKER": str(tmp_path / "held"),
    }
    # --timeout 4: heartbeats every second. A worker whose reader is held back notices that the
    # master cut it off when its next heartbeat cannot be written.
    args = ["bigflood:serve", "-w", "2", "--outbox-limit", str(BIG_OUTBOX_LIMIT), "--timeout", "4"]
    if inbox_limit is not None:
        args += ["--inbox-limit", str(inbox_limit)]
    limit = inbox_limit or DEFAULT_INBOX_LIMIT
    with trio.fail_after(60):
        async with open_stereo(*args, env=env) as stereo:
            first = await started(stereo, 2)
            baseline = await stereo.wait_for(r"^\[worker 1\] subscribed hwm_kib=(\d+)$")
            # Cut off, or (if nothing bounds it) every byte received and held.
            await stereo.wait_for(
                rf"worker 1 \(pid {first[1]}\) exited: |^\[worker 1\] received {BIG * BIG_COUNT} "
            )
            progress = [
                (int(m[1]), int(m[2]))
                for line in stereo.worker_lines(1)
                if (m := re.fullmatch(r"received (\d+) hwm_kib=(\d+)", line))
            ]
            received, peak = max(progress)
            # It stopped reading once the iterator held the limit (give or take a read).
            assert limit - BIG <= received <= limit + 2 * BIG, received
            growth = (peak - int(baseline[0][1])) * 1024
            measure(
                f"worker peak RSS growth, --inbox-limit {limit} (MiB)", round(growth / 2**20, 1)
            )
            assert growth < memory_bound(limit), f"the worker grew by {growth} bytes"
            await stereo.wait_for(
                rf"worker 1 \(pid {first[1]}\) exited: cut off: slow consumer: \d+ bytes waiting"
                rf" for it, over the {BIG_OUTBOX_LIMIT}-byte outbox limit; exit 5"
            )
            await stereo.wait_for(STARTED, count=3)  # slot 1 is back
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


# -- bad hub input -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.usefixtures("relay_plane")
async def test_random_bytes_on_the_hub_cost_only_the_sender(tmp_path: Path, seed: int) -> None:
    env = {"FUZZ_MARKER": str(tmp_path / "done"), "FUZZ_MODE": "random", "FUZZ_SEED": str(seed)}
    await _fuzz(env, r"exited: cut off: protocol error")


@pytest.mark.usefixtures("relay_plane")
async def test_a_truncated_frame_then_eof_is_dropped_not_relayed(tmp_path: Path) -> None:
    env = {"FUZZ_MARKER": str(tmp_path / "done"), "FUZZ_MODE": "truncated"}
    await _fuzz(env, r"exited: exit 5 \(hub connection lost\); its connection ended inside a frame")


async def _fuzz(env: dict[str, str], exit_reason: str) -> None:
    with trio.fail_after(60):
        async with open_stereo("hubfuzz:serve", "-w", "3", env=env) as stereo:
            first = await started(stereo, 3)
            await stereo.wait_for(rf"worker 1 \(pid {first[1]}\) {exit_reason}")
            await wait_exited(first[1])
            new = (await stereo.wait_for(r"^\[worker 1\] started pid=(\d+)$", count=2))[1]
            # The relay carried on: workers 2 and 3, never restarted, hear the new worker 1...
            for other in (2, 3):
                await stereo.wait_for(rf"^\[worker {other}\] saw hello from 1 pid={new[1]}$")
            # ...and nothing from the misbehaving one reached them except, at most, its hello.
            for other in (2, 3):
                lines = stereo.worker_lines(other)
                assert len([x for x in lines if x.startswith("started")]) == 1
                assert all(
                    re.fullmatch(r"started pid=\d+|saw hello from \d pid=\d+", x) for x in lines
                ), lines
            assert stereo.process.returncode is None
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_an_app_that_closes_its_hub_descriptor_is_reported_as_hub_lost(
    tmp_path: Path,
) -> None:
    env = {"HUBCLOSE_MARKER": str(tmp_path / "closed")}
    with trio.fail_after(60):
        async with open_stereo("hubclose:serve", "-w", "1", env=env) as stereo:
            first = await started(stereo, 1)
            exited = await stereo.wait_for(rf"worker 1 \(pid {first[1]}\) exited: (.*)")
            assert re.match(r"exit 5 \(hub connection lost\); restarting", exited[0][1])
            await stereo.wait_for(
                r"^\[worker 1\] stereo worker: hub connection lost: its descriptor was closed"
                r" in this process, not by stereo \(by the app\?\)$"
            )
            await stereo.wait_for(STARTED, count=2)  # replaced, like any worker that lost the hub
            assert not any("Traceback" in line for line in stereo.lines)
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


# -- crash loops ---------------------------------------------------------------------------------


async def test_a_crash_loop_backs_off_then_fails_and_an_operator_restart_revives(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "crash"
    marker.touch()
    env = {"CRASH_MARKER": str(marker)}
    with trio.fail_after(60):
        async with open_stereo("crashy:serve", "-w", "2", env=env) as stereo:
            for slot in (1, 2):
                await stereo.wait_for(
                    rf"^\[stereo\] worker {slot} failed: exit 1 \(app crashed\); not restarting"
                )
            delays: dict[int, list[float]] = {1: [], 2: []}
            for line in stereo.lines:
                if m := re.search(
                    r"worker (\d) \(pid \d+\) exited: exit 1 \(app crashed\);"
                    r" restarting in ([\d.]+) s",
                    line,
                ):
                    delays[int(m[1])].append(float(m[2]))
            for slot_delays in delays.values():
                # Capped exponential (base 0.1 s), full jitter on the upper half; 5 quick crashes
                # in a row (the limit) end in FAILED: 4 delays.
                assert len(slot_delays) == 4, delays
                for i, delay in enumerate(slot_delays):
                    raw = 0.1 * 2**i
                    assert raw / 2 - 0.006 <= delay <= raw + 0.006, delays
            measure("crash loop backoff delays (s), slots 1 and 2", delays)
            assert stereo.process.returncode is None  # the master stays up
            # Fix the app, then an operator restart (SIGHUP, like `restart`) revives both slots.
            marker.unlink()
            mark = len(stereo.lines)
            stereo.signal(signal.SIGHUP)
            await stereo.wait_for(r"^\[worker [12]\] running$", count=2, start=mark)
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_an_app_that_raises_at_import_fails_at_once_and_the_master_stays_up(
    tmp_path: Path,
) -> None:
    # At start-up such an app ends `stereo run` (test_startup.py); workers an operator adds
    # later (here with -w 0, then SIGTTIN) fail their slots instead, and the master stays up.
    with trio.fail_after(60):
        control = str(tmp_path / "control.sock")
        async with open_stereo("broken_import:serve", "-w", "0", "--control", control) as stereo:
            await stereo.wait_for(r"^\[stereo\] control socket: ")  # signals are handled by now
            for slot in (1, 2):
                mark = len(stereo.lines)
                stereo.signal(signal.SIGTTIN)
                await stereo.wait_for(
                    rf"^\[stereo\] worker {slot} failed: exit 4 \(app load error\)", start=mark
                )
            await stereo.wait_for(
                r"^\[stereo\] worker 1 failed: exit 4 \(app load error\): cannot import"
                r" 'broken_import': RuntimeError: simulated import-time failure; not restarting"
            )
            await stereo.wait_for(r"^\[stereo\] worker 2 failed: .*, as worker 1; not restarting")
            # Restarting cannot help a module that does not import: no retry, no backoff.
            assert not any(re.search(r"exited: .*; restarting", line) for line in stereo.lines)
            assert stereo.process.returncode is None
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_operator_restarts_and_removals_never_count_as_crashes() -> None:
    # Six rolling restarts of workers younger than --quick-exit (2 s): were they counted as
    # crashes, the fifth would fail the slots.
    with trio.fail_after(90):
        async with open_stereo("httpd:serve", "-w", "2", "--bind", "127.0.0.1:0") as stereo:
            pids = await started(stereo, 2)
            for _ in range(6):
                mark = len(stereo.lines)
                stereo.signal(signal.SIGHUP)
                await started(stereo, 2, start=mark)
                await wait_all_exited(list(pids.values()))
                pids = current_pids(stereo)
            mark = len(stereo.lines)
            stereo.signal(signal.SIGTTOU)
            await stereo.wait_for(r"SIGTTOU: removing worker \[2\]", start=mark)
            await wait_exited(pids[2])
            # A healthy slot 1 is left, and nothing was respawned as after a crash.
            assert not any(
                re.search(r"restarting|failed|exited", line)
                for line in stereo.lines
                if line.startswith("[stereo]")
            ), stereo.lines
            assert current_pids(stereo)[1] == pids[1]
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


# -- zero-downtime restarts under load -----------------------------------------------------------

CLIENTS = 8


async def test_restarts_scaling_and_a_kill_under_load_lose_only_the_killed_workers_requests() -> (
    None
):
    with trio.fail_after(120):
        async with open_stereo("httpd:serve", "-w", "4", "--bind", "127.0.0.1:0") as stereo:
            host, port = await stereo.address()
            await started(stereo, 4)
            load = LoadGenerator(host, port, clients=CLIENTS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.run)
                await load.wait_ok(200)

                load.phase = "SIGHUP"
                old = current_pids(stereo)
                mark = len(stereo.lines)
                stereo.signal(signal.SIGHUP)
                await started(stereo, 4, start=mark)
                await wait_all_exited(list(old.values()))
                await load.wait_ok(200)

                load.phase = "scale 4->8->2"
                for n in range(5, 9):
                    mark = len(stereo.lines)
                    stereo.signal(signal.SIGTTIN)  # one at a time: signals of one kind coalesce
                    await stereo.wait_for(rf"SIGTTIN: added worker \[{n}\]", start=mark)
                    await stereo.wait_for(rf"^\[worker {n}\] started", start=mark)
                await load.wait_ok(200)
                before = current_pids(stereo)
                for n in range(8, 2, -1):
                    mark = len(stereo.lines)
                    stereo.signal(signal.SIGTTOU)
                    await stereo.wait_for(rf"SIGTTOU: removing worker \[{n}\]", start=mark)
                await wait_all_exited([before[n] for n in range(3, 9)])
                await load.wait_ok(200)

                load.phase = "worker SIGKILL"
                victim = current_pids(stereo)[1]
                mark = len(stereo.lines)
                os.kill(victim, signal.SIGKILL)
                await stereo.wait_for(r"^\[worker 1\] started", start=mark)
                await load.wait_ok(200)
                load.phase = "after"
                await load.wait_ok(200)
                load.stop()
            summary = load.summary()
            measure("load: requests per phase (ok, failed)", summary)
            measure("load: failures", load.failures[:10])
            for phase, (_, failed) in summary.items():
                if phase == "worker SIGKILL":
                    # Only what was in flight on the killed worker: at most one per client, and
                    # never a refused connection.
                    assert failed <= CLIENTS
                    assert not any("refused" in error.lower() for _, error in load.failures)
                else:
                    assert failed == 0, (phase, load.failures)
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


# -- not the app's fault: retried, never FAILED ------------------------------------------------


async def test_kills_from_outside_are_retried_however_often_they_come() -> None:
    # kill -9 (the OOM killer, an operator) right after each start, more often than the crash
    # limit (5 in a row): the slot keeps respawning, because the app did nothing wrong.
    with trio.fail_after(60):
        async with open_stereo("pids:serve", "-w", "1", "--bind", "127.0.0.1:0") as stereo:
            mark = 0
            for _ in range(6):
                pid = (await started(stereo, 1, start=mark))[1]
                mark = len(stereo.lines)
                os.kill(pid, signal.SIGKILL)
                await stereo.wait_for(
                    rf"worker 1 \(pid {pid}\) exited: killed by SIGKILL; restarting in", start=mark
                )
            await started(stereo, 1, start=mark)  # the seventh runs
            assert not any("failed" in line for line in stereo.lines)


@pytest.mark.usefixtures("relay_plane")
async def test_a_sender_cut_off_by_its_own_echoes_is_retried_not_failed() -> None:
    with trio.fail_after(60):
        async with open_stereo("echoflood:serve", "-w", "1", "--outbox-limit", "2097152") as stereo:
            await stereo.wait_for(
                r"worker 1 \(pid \d+\) exited: cut off: slow consumer: .*; restarting in", count=6
            )
            assert not any("failed" in line for line in stereo.lines)


# -- a stopped master ------------------------------------------------------------------------------


async def test_a_master_stopped_past_the_timeout_kills_no_healthy_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    with trio.fail_after(60):
        async with open_stereo(
            "control_app:serve", "-w", "2", "--timeout", "1", "--control", path
        ) as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            await stereo.wait_for(r"control socket: ")
            before = await status_pids(path)
            stereo.signal(signal.SIGSTOP)  # a debugger, the cgroup freezer, CPU starvation...
            # The stall itself: three times --timeout, while the workers keep beating into their
            # sockets (a duration of the scenario, not a wait for something to happen).
            await trio.sleep(3)
            stereo.signal(signal.SIGCONT)
            mark = len(stereo.lines)
            await control(path, "broadcast", {"value": "after the stall"})
            await stereo.wait_for(r'received "after the stall" from 0', count=2, start=mark)
            assert await status_pids(path) == before  # the same processes: nobody was killed
            assert not any("no heartbeat" in line for line in stereo.lines)


async def control(path: str, command: str, args: dict[str, object] | None = None) -> object:
    def request() -> object:
        with ControlClient.connect(path) as client:
            return client.request(command, args, timeout=10)

    return await trio.to_thread.run_sync(request)


async def status_pids(path: str) -> dict[int, int]:
    rows = await control(path, "status")
    assert isinstance(rows, list)
    return {row["slot"]: row["pid"] for row in rows}
