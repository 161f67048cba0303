"""The job pool end to end (docs/pool.md): real `stereo run --pool`, real pool processes, real
signals. The app (tests/apps/pooljobs.py) runs one scenario and prints ``RESULT {json}``; every
wait is on an output line or an exit, under ``trio.fail_after``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Stereo, ctl, open_stereo

# The pool's routes (DIRECT, BOUNCED, MEMBERS, END) on both of the master's data planes.
pytestmark = pytest.mark.usefixtures("relay_plane")

TIMEOUT = 90


def start(tmp_path: Path, scenario: str, *args: str) -> Any:
    env = {"POOL_SCENARIO": scenario, "POOL_TMP": str(tmp_path)}
    control = str(tmp_path / "ctl.sock")
    return open_stereo("pooljobs:serve", "-w", "1", "--control", control, *args, env=env)


async def result(stereo: Stereo) -> dict[str, Any]:
    match = (await stereo.wait_for(r"^\[worker \d+\] RESULT (.*)$"))[0]
    value: dict[str, Any] = json.loads(match[1])
    return value


async def test_results_and_exceptions_round_trip(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with start(tmp_path, "roundtrip", "--pool", "2", "--pool", "pdf=1") as stereo:
            got = await result(stereo)
            code, out, err = await ctl("--control", str(tmp_path / "ctl.sock"), "status")
            # A pool process's output is labelled with its pool and slot, live and in `logs`.
            said = await stereo.wait_for(r"^\[pool pdf (\d+)\] a job of pool pdf$")
            _, logs, _ = await ctl("--control", str(tmp_path / "ctl.sock"), "logs", said[0][1])
    assert got["total"] == 50  # (2 + 3) * 10: args and kwargs travelled
    assert len(got["pids"]) == 2 and got["worker_pid"] not in got["pids"]  # both processes ran
    # The named pool is its own process, and status shows each pool as a group.
    assert len(got["pdf"]) == 1 and got["pdf"][0] not in got["pids"]
    assert code == 0 and "pool default: " in out and "pool pdf: " in out, out + err
    assert got["error"] == "ValueError: bad input"
    assert "in fail" in got["remote"] and "raise ValueError(text)" in got["remote"]
    assert "Unpicklable" in got["unpicklable"] and "cannot be pickled" in got["unpicklable"]
    assert "no job pool 'nope'" in got["unknown"]
    assert logs == f"[pool pdf {said[0][1]}] a job of pool pdf\n"


async def test_a_pool_process_killed_mid_job_fails_only_that_job_and_is_respawned(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start(tmp_path, "killmid", "--pool", "1") as stereo:
            running = int((await stereo.wait_for(r"gated pid=(\d+)"))[0][1])
            os.kill(running, signal.SIGKILL)
            got = await result(stereo)
            await stereo.wait_for(rf"\(pid {running}\) exited: .*SIGKILL.*restarting")
    assert got["first"].startswith("PoolProcessDied: pool process")
    # The jobs queued behind it never ran there: they ran in its replacement.
    assert got["second"] == got["third"] != running


async def test_cancelled_jobs_never_run_and_kill_on_cancel_kills_the_process(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start(tmp_path, "cancel", "--pool", "1") as stereo:
            await stereo.wait_for(r"gated pid=\d+", count=2)
            await stereo.wait_for(r"waiting for cancel")
            code, _, err = await ctl(
                "--control", str(tmp_path / "ctl.sock"), "broadcast", '"cancel"'
            )
            assert code == 0, err
            got = await result(stereo)
    assert got["ran"] == ["after"]  # the cancelled queued job was skipped
    assert got["killed"] is True
    assert got["after"] != got["before"]  # its pool process was killed and replaced


async def test_a_flood_of_jobs_waits_in_run_sync_with_bounded_jobs_in_flight(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start(tmp_path, "flood", "--pool", "1") as stereo:
            got = await result(stereo)
    # 5,001 callers; the running job plus at most 63 more were sent, the rest wait unsent.
    assert 1 < got["in_flight"] <= 64
    assert got["done"] == 5000 and got["correct"] is True


async def test_scaling_the_pool_under_load_loses_no_job(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(TIMEOUT * 2):
        async with start(tmp_path, "scale", "--pool", "2") as stereo:
            await stereo.wait_for(r"load running")
            code, out, err = await ctl("--control", control, "scale", "4", "--pool")
            assert code == 0, err
            code, out, err = await ctl("--control", control, "status")
            assert code == 0 and "pool default:" in out, out + err
            code, out, err = await ctl("--control", control, "scale", "1", "--pool")
            assert code == 0, err
            # The three removed pool processes answer what they were sent, then exit.
            await stereo.wait_for(r"stereo pool: stopped after \d+ jobs", count=3)
            code, _, err = await ctl("--control", control, "broadcast", '"stop"')
            assert code == 0, err
            got = await result(stereo)
    assert got["errors"] == [] and got["wrong"] == 0
    assert got["done"] > 200
    assert got["pool_pids"] >= 3  # the added processes took jobs too


def start_two(tmp_path: Path, scenario: str, **env: str) -> Any:
    """-w 2 --pool 1: two workers share one pool process (ids 1 and 2, the pool process 3)."""
    env = {"POOL_SCENARIO": scenario, "POOL_TMP": str(tmp_path), **env}
    control = str(tmp_path / "ctl.sock")
    return open_stereo("pooljobs:serve", "-w", "2", "--pool", "1", "--control", control, env=env)


async def results(stereo: Stereo) -> dict[str, dict[str, Any]]:
    matches = await stereo.wait_for(r"^\[worker \d+\] RESULT (.*)$", count=2)
    found = [json.loads(match[1]) for match in matches]
    return {got["role"]: got for got in found}


async def release(gate: Path) -> None:
    def write() -> None:
        with open(gate, "w") as fifo:
            fifo.write("go")

    await trio.to_thread.run_sync(write)


@pytest.mark.parametrize("suicide", [True, False], ids=["job-kills-itself", "kill-9"])
async def test_a_death_fails_only_the_running_job_not_another_workers_queued_ones(
    tmp_path: Path, suicide: bool
) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(TIMEOUT):
        async with start_two(tmp_path, "shared", POOL_SUICIDE="1" if suicide else "0") as stereo:
            running = int((await stereo.wait_for(r"gated pid=(\d+)"))[0][1])
            code, _, err = await ctl("--control", control, "broadcast", '"queue"')
            assert code == 0, err
            # Worker 2's three jobs are in the pool process's socket, behind worker 1's.
            await stereo.wait_for(r"B queued")
            if suicide:
                await release(tmp_path / "gate")
            else:
                os.kill(running, signal.SIGKILL)
            got = await results(stereo)
            await stereo.wait_for(rf"\(pid {running}\) exited: .*SIGKILL.*restarting")
    assert got["A"]["first"].startswith("PoolProcessDied: pool process")
    # Worker 2's jobs had not started: none failed, all ran once in the replacement.
    assert got["B"]["errors"] == []
    assert len(got["B"]["pids"]) == 3 and set(got["B"]["pids"]) != {running}
    assert len(set(got["B"]["pids"])) == 1


async def test_kill_on_cancel_of_a_queued_job_skips_it_and_kills_nothing(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(TIMEOUT):
        async with start_two(tmp_path, "killprecise") as stereo:
            running = int((await stereo.wait_for(r"gated pid=(\d+)"))[0][1])
            code, _, err = await ctl("--control", control, "broadcast", '"queue"')
            assert code == 0, err
            await stereo.wait_for(r"A cancelled")
            await release(tmp_path / "gate")
            got = await results(stereo)
    # Worker 1's cancelled job was its oldest there but not running: skipped, nobody killed.
    assert got["A"]["ran"] == [] and got["A"]["after"] == running
    assert got["B"]["first"] == "go" and got["B"]["after"] == running


async def test_pool_processes_killed_under_load_fail_only_running_jobs_and_run_none_twice(
    tmp_path: Path,
) -> None:
    env = {"POOL_SCENARIO": "chaos", "POOL_TMP": str(tmp_path)}
    killed: set[str] = set()
    with trio.fail_after(TIMEOUT * 2):
        async with open_stereo("pooljobs:serve", "-w", "2", "--pool", "2", env=env) as stereo:
            for threshold in (60, 140, 220, 300, 380):
                # A pool process that just started a job: kill it, mid-job or a little after.
                pid = (await stereo.wait_for(r"start \S+ pid=(\d+)", count=threshold))[-1][1]
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass  # killed already
            got = await results(stereo)
    assert len(killed) >= 3
    records = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    started = [tag for word, tag, _ in records if word == "start"]
    ended = {tag for word, tag, _ in records if word == "end"}
    last = {pid: (word, tag) for word, tag, pid in records}  # each process's last line
    ok = got["1"]["ok"] + got["2"]["ok"]
    died = got["1"]["died"] + got["2"]["died"]
    assert got["1"]["errors"] == got["2"]["errors"] == []
    assert len(ok) + len(died) == 600 and not set(ok) & set(died)
    assert len(started) == len(set(started))  # no job ran twice
    assert set(ok) <= ended  # a result: the job ran to its end
    # A process killed inside a job failed that job; at most one job failed per death.
    inside = {tag for pid, (word, tag) in last.items() if pid in killed and word == "start"}
    assert inside <= set(died) and len(died) <= len(killed)
    # A failed job that never wrote its first line was announced by a process killed between
    # jobs (after its previous job's end line, before this one's first line).
    between = [pid for pid, (word, _) in last.items() if pid in killed and word == "end"]
    assert len(set(died) - set(started)) <= len(between)
