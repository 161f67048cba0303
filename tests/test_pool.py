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
    assert got["total"] == 50  # (2 + 3) * 10: args and kwargs travelled
    assert len(got["pids"]) == 2 and got["worker_pid"] not in got["pids"]  # both processes ran
    # The named pool is its own process, and status shows each pool as a group.
    assert len(got["pdf"]) == 1 and got["pdf"][0] not in got["pids"]
    assert code == 0 and "pool default: " in out and "pool pdf: " in out, out + err
    assert got["error"] == "ValueError: bad input"
    assert "in fail" in got["remote"] and "raise ValueError(text)" in got["remote"]
    assert "Unpicklable" in got["unpicklable"] and "cannot be pickled" in got["unpicklable"]
    assert "no job pool 'nope'" in got["unknown"]


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
