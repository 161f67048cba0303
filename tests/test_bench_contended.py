"""Issue 16's contended condition: busy loops that start before a leg and are gone after it, the
relaying process's CPU over the workers' own window, and one real contended run of the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.contend import TAG, busy_loop_argv, busy_loops
from bench.cpu_sampler import CpuSampler
from bench.procs import Group
from bench.relay import leg_pids
from bench.results import BATCHES, Results

ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_busy_loops_spin_during_the_block_and_are_reaped_after_it() -> None:
    with busy_loops(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            process = psutil.Process(pid)
            # Spinning already: the loop said so just before `while True`.
            assert process.status() in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING)
            assert f"{TAG} {os.getpid()}" in " ".join(process.cmdline())
    for pid in pids:
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(pid)


def test_busy_loops_are_reaped_when_the_leg_fails() -> None:
    with pytest.raises(RuntimeError, match="leg failed"), busy_loops(1) as pids:
        raise RuntimeError("leg failed")
    assert _gone(pids[0])


def test_a_busy_loop_nobody_reaps_ends_by_its_own_alarm() -> None:
    proc = subprocess.Popen(busy_loop_argv(1), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spinning"
    assert proc.wait(timeout=30) == -signal.SIGALRM
    proc.stdout.close()


def test_busy_loops_die_with_a_harness_killed_by_a_signal() -> None:
    # A harness SIGKILLed inside the block runs no `finally`: the loops must not outlive it.
    harness = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from bench.contend import busy_loops\n"
            "with busy_loops(2) as pids:\n"
            "    print(*pids, flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert harness.stdout is not None and harness.stdin is not None
    loops = [psutil.Process(int(pid)) for pid in harness.stdout.readline().split()]
    assert len(loops) == 2 and all(p.is_running() for p in loops)
    harness.kill()
    assert harness.wait(timeout=30) == -signal.SIGKILL
    _gone, alive = psutil.wait_procs(loops, timeout=30)
    assert alive == []
    harness.stdin.close()
    harness.stdout.close()


def test_cpu_over_a_window_is_interpolated_between_the_samples_around_it() -> None:
    with busy_loops(1) as pids, CpuSampler(pids[0]) as sampler:
        start = sampler.times[0]
        deadline = time.monotonic() + 60
        # The sampler thread appends every 5 ms; wait on its samples, not on the clock.
        while len(sampler.times) < 20 and time.monotonic() < deadline:
            pass
    end = sampler.times[-1]
    assert sampler.at(start - 1) is None
    assert sampler.at(end + 1) is None
    spun = sampler.between(start, end)
    assert spun is not None
    # One busy loop uses at most one core over the window, and it did spin.
    assert 0 < spun <= (end - start) / 1e9 * 1.05
    middle = (sampler.times[5] + sampler.times[6]) // 2
    halfway = (sampler.cpu[5] + sampler.cpu[6]) / 2
    assert sampler.at(middle) == pytest.approx(halfway, rel=0.05)


def test_cpu_of_a_set_of_processes_sums_all_of_them() -> None:
    with (
        busy_loops(2) as pids,
        CpuSampler(pids[0]) as one,
        CpuSampler(pids[0], lambda: pids) as both,
    ):
        deadline = time.monotonic() + 60
        while min(len(one.times), len(both.times)) < 40 and time.monotonic() < deadline:
            pass
    start = max(one.times[0], both.times[0])
    end = min(one.times[-1], both.times[-1])
    alone, together = one.between(start, end), both.between(start, end)
    assert alone is not None and together is not None
    # Two loops spin on this machine's cores: the pair used more than the first one did, and
    # no more than every core over the window.
    assert together > alone * 1.3
    assert together <= (end - start) / 1e9 * (os.cpu_count() or 1) * 1.05


def test_a_legs_processes_are_the_harness_children_and_all_their_descendants(
    tmp_path: Path,
) -> None:
    parent = (
        "import subprocess, sys\n"
        "code = 'import subprocess, sys, time; "
        'subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]); '
        "time.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code])\n"
        "print(f'@bench go child={child.pid}', flush=True)\n"
        "child.wait()\n"
    )
    with Group("pids", str(tmp_path)) as group:
        first = group.spawn([sys.executable, "-c", parent], name="first")
        other = group.spawn([sys.executable, "-c", "import time; time.sleep(60)"], name="other")
        (go,) = group.wait("go", 1, 30)
        child = go.int("child")
        deadline = time.monotonic() + 30
        while len(psutil.Process(child).children()) < 1 and time.monotonic() < deadline:
            pass  # the grandchild is being started: wait on its appearance, bounded
        (grandchild,) = psutil.Process(child).children()
        assert sorted(leg_pids(group)) == sorted([first.pid, other.pid, child, grandchild.pid])


def _our_busy_loops(pid: int) -> list[psutil.Process]:
    tag = f"{TAG} {pid}"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if tag in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.mark.timeout(300)
def test_a_contended_run_of_the_suite_measures_both_stereo_peers_and_leaves_no_loop(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, "-m", "bench", "--quick", "--repeat", "1", "--relay-cases", "4:64"]
    argv += ["--only", "relay-contended,latency-contended", "--peers", f"stereo,{BATCHES}"]
    argv += ["--out", str(tmp_path)]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=280)
    assert proc.returncode == 0, err[-3000:]
    assert _our_busy_loops(proc.pid) == []
    results = Results.load(tmp_path / "results.json")
    assert [r.peer for r in results.relay_contended] == ["stereo", BATCHES]
    for row in results.relay_contended:
        assert row.ok, row
        assert row.relay_ns_per_delivery is not None and row.relay_ns_per_delivery > 0
        cores = row.peer_cores
        assert cores is not None and 0 < cores <= (os.cpu_count() or 1) * 1.05
    # The batch variant reads bursts differently; a paced stream is the same for both.
    assert [r.peer for r in results.latency_contended] == ["stereo"]
    assert results.latency_contended[0].ok
    assert [f.echo for f in results.floor_contended] == ["blocking", "trio"]
    assert not results.relay and not results.latency
    assert "### Quiet and contended" in out
    assert "cores used by all its processes" in out
    assert "relay contended stereo W=4" in err
