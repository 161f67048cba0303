"""bench/profile_relay.py: its reductions on their own, and one real run of the tool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import ThreadTimes
from bench.profile_relay import self_times, share_rows

ROOT = Path(__file__).resolve().parent.parent


def test_self_time_is_the_innermost_frames_function_line_numbers_dropped() -> None:
    raw = [
        "main (a.py:1);loop (a.py:5);decode (b.py:10) 6",
        "main (a.py:1);loop (a.py:5);decode (b.py:11) 2",
        "main (a.py:1);loop (a.py:7) 2",
        "garbage without a count",
    ]
    assert self_times(raw) == [("decode (b.py)", 0.8), ("loop (a.py)", 0.2)]
    assert self_times([]) == []


def test_shares_sum_a_process_threads_over_the_window() -> None:
    before = {(1, 1): ThreadTimes(100, 0), (1, 2): ThreadTimes(0, 0), (2, 2): ThreadTimes(0, 50)}
    after = {
        (1, 1): ThreadTimes(600, 200),
        (1, 2): ThreadTimes(300, 0),  # a thread seen only now counts from zero
        (1, 3): ThreadTimes(100, 100),
        (2, 2): ThreadTimes(250, 550),
    }
    rows = share_rows(before, after, {1: "master", 2: "worker 1"}, 1000)
    assert rows == [("master", 0.9, 0.3), ("worker 1", 0.25, 0.5)]


@pytest.mark.timeout(120)
def test_a_quiet_run_profiles_a_worker_and_reads_every_process_share() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.profile_relay", "--seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    rows = [line for line in out.splitlines() if line.startswith(("| master", "| worker"))]
    assert [row.split(" | ")[0] for row in rows] == [
        "| master (all its threads)",
        "| worker 1",
        "| worker 2",
        "| worker 3",
        "| worker 4",
    ]
    # Every worker was on a CPU in the window (the relay was running), none for more than it.
    for row in rows[1:]:
        on_cpu = float(row.split(" | ")[1].rstrip("%"))
        assert 0 < on_cpu <= 101
    assert "py-spy failed" not in proc.stderr
    assert "`BroadcastReader.deliveries (stereo/wire/protocol.py)`" in out
