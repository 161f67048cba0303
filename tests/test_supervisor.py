"""Supervision edge cases that need the master in-process (to break its environment) or a slow
boot: spawn failures and replacements that never become ready."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio
from conftest import APPS, Output, open_stereo

from stereo.master.config import Settings
from stereo.master.master import Master
from stereo.master.output import OutputSink


async def test_a_worker_that_cannot_be_spawned_is_retried_until_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python = sys.executable
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # exec fails: ENOENT
    output = Output()
    master = Master(
        # A socket-less app: no --bind here (pids:serve would be a boot error without one).
        Settings(app="control_app:serve", app_dir=str(APPS), workers=2),
        [],
        OutputSink(output.write),
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(master.run)
            # A shortage (fd limit, memory) may pass: the slots retry with backoff, saying why.
            await output.wait_for(
                r"worker \d: cannot start a worker process: .*No such file.*; retrying in", count=4
            )
            rows = master.snapshot().supervisor.slots
            assert {row.state for row in rows} <= {"backoff", "running"}
            assert all(row.setbacks >= 2 for row in rows)
            monkeypatch.setattr(sys, "executable", python)  # the shortage is over
            await output.wait_for(r"^\[worker [12]\] ready$", count=2)
            master.shutdown(graceful=True)  # and it still stops cleanly
    assert "all workers stopped; bye" in output.text


async def test_a_replacement_that_never_gets_ready_is_given_up_and_the_old_one_serves_on(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "hang"
    env = {"HANGBOOT_MARKER": str(marker)}
    with trio.fail_after(60):
        async with open_stereo("hangboot:serve", "-w", "1", "--timeout", "1", env=env) as stereo:
            old = int((await stereo.wait_for(r"^\[worker 1\] started pid=(\d+)$"))[0][1])
            marker.touch()  # the next import hangs, as with a database that never answers
            mark = len(stereo.lines)
            stereo.signal(signal.SIGHUP)
            await stereo.wait_for(
                r"restart of worker 1: the replacement \(pid \d+\) was not ready within 5 s;"
                r" stopping it, the old one serves on",
                start=mark,
            )
            # The restart lock was released: once the app is fixed, the next restart works.
            marker.unlink()
            stereo.signal(signal.SIGHUP)
            match = (await stereo.wait_for(r"^\[worker 1\] started pid=(\d+)$", start=mark))[0]
            assert int(match[1]) != old


async def test_max_workers_bounds_w_and_sigttin() -> None:
    with trio.fail_after(40):
        async with open_stereo("control_app:serve", "-w", "3", "--max-workers", "2") as stereo:
            assert await stereo.wait() == 2
            assert stereo.lines == [
                "stereo: --workers 3: must be a whole number from 0 to 2 (--max-workers)"
            ]
        async with open_stereo("control_app:serve", "-w", "2", "--max-workers", "2") as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            stereo.signal(signal.SIGTTIN)
            await stereo.wait_for(
                r"^\[stereo\] SIGTTIN: not adding a worker: 3 workers would be over the limit"
                r" of 2 \(--max-workers\)$"
            )
            stereo.signal(signal.SIGTTOU)  # the master still takes signals
            await stereo.wait_for(r"^\[stereo\] SIGTTOU: removing worker \[2\]$")
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
