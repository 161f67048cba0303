"""The job pool workload (``python -m bench --only pool``; docs/pool.md): stereo's
``worker.run_sync`` against ``trio_parallel.run_sync`` and ``ProcessPoolExecutor``, each with 2
processes, in turns, round after round; each figure is its system's median round.

- stereo: ``stereo run bench.apps.pool_stereo:serve -w 1 --pool 2``: one worker calls, two pool
  processes run the jobs, every job and answer relayed by the master (two hops each way);
- the peers: ``python -m bench.apps.pool_peers NAME``, a trio process calling trio_parallel's
  default worker type, and a plain process keeping ``callers`` futures in flight.

The targets (issue 14) are printed beside the figures: trivial jobs/s >= 3x both peers and
>= 45k; the CPU-bound wall time <= 1.1x the ideal (jobs x ms / 2 processes). Just before each
system's turn, the CPU-bound leg's floor: the same jobs in 2 bare processes, no pool at all; on
a machine shared with other work it is above the ideal, for every system alike.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .apps.pool_peers import FLOOR, POOL_ENV
from .apps.pool_stereo import OUT_ENV
from .peers.base import PYTHON
from .peers.stereo_peer import stereo_command, stereo_run
from .pool_work import PoolWork
from .procs import Group, LegFailed, suite_env
from .results import PoolResult, median_round

STEREO = "stereo run_sync"
PEERS = ("trio_parallel.run_sync", "ProcessPoolExecutor(2)")
FULL_WORK = PoolWork(callers=64, jobs=20_000, latency_jobs=1_000, cpu_jobs=1_000, cpu_ms=2.0)
QUICK_WORK = PoolWork(callers=64, jobs=2_000, latency_jobs=200, cpu_jobs=200, cpu_ms=2.0)
TIMEOUT = 300.0


def _stereo(work: PoolWork) -> dict[str, float]:
    command = stereo_command()
    if not command:
        raise LegFailed("no stereo command in this environment")
    with tempfile.TemporaryDirectory(prefix="stereo-bench-pool-") as tmp:
        out = Path(tmp) / "figures.json"
        env = suite_env()
        env[POOL_ENV] = json.dumps(work.to_map())
        env[OUT_ENV] = str(out)
        argv = stereo_run(command, "bench.apps.pool_stereo:serve", 1, "--pool", "2")
        with Group("pool stereo", tmp) as group:
            group.spawn(argv, name="stereo", env=env)
            group.wait("pooldone", 1, TIMEOUT)
        figures: dict[str, float] = json.loads(out.read_text())
        return figures


def _peer(name: str, work: PoolWork) -> dict[str, float]:
    env = suite_env()
    env[POOL_ENV] = json.dumps(work.to_map())
    done = subprocess.run(
        [PYTHON, "-m", "bench.apps.pool_peers", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise LegFailed(f"{name} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _floor(work: PoolWork, loud: Callable[[str], None]) -> float:
    """The CPU-bound leg's floor, measured just before a system's turn (0.0 if it failed)."""
    try:
        return _peer(FLOOR, work)["cpu_floor_s"]
    except (LegFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
        loud(f"pool floor: {exc}")
        return 0.0


def run_pool(
    quick: bool, repeat: int, progress: Callable[[str], None], loud: Callable[[str], None]
) -> list[PoolResult]:
    work = QUICK_WORK if quick else FULL_WORK
    systems = (STEREO, *PEERS)
    rounds: dict[str, list[PoolResult]] = {name: [] for name in systems}
    for _ in range(repeat):
        for name in systems:
            floor = _floor(work, loud)
            row = PoolResult(
                system=name,
                processes=work.processes,
                callers=work.callers,
                jobs=work.jobs,
                cpu_jobs=work.cpu_jobs,
                cpu_ms=work.cpu_ms,
                cpu_floor_s=floor,
            )
            try:
                figures = _stereo(work) if name == STEREO else _peer(name, work)
            except (LegFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
                row.error = str(exc)
                loud(f"pool {name}: {exc}")
            else:
                row.jobs_per_s = figures["jobs_per_s"]
                row.p50_us = figures["p50_us"]
                row.p99_us = figures["p99_us"]
                row.cpu_wall_s = figures["cpu_wall_s"]
                row.cpu_others_s = figures.get("cpu_others_s", 0.0)
            progress(
                f"pool {name} -> {row.jobs_per_s:,.0f} jobs/s, p50 {row.p50_us:.0f} µs,"
                f" p99 {row.p99_us:.0f} µs, cpu {row.cpu_wall_s:.3f} s (floor {floor:.3f} s)"
                f" {row.error or ''}"
            )
            rounds[name].append(row)
    return [
        median_round(rounds[name], lambda r: r.jobs_per_s if r.error is None else -1.0)
        for name in systems
    ]
