"""The job pool workload's jobs and measurements, the same for every system (bench/pool.py).

Three figures per system: trivial jobs/s with many concurrent callers, the latency of one job
at a time (p50/p99), and the wall time of CPU-bound jobs of a fixed CPU cost. The trio-based
systems (stereo's ``worker.run_sync``, ``trio_parallel.run_sync``) are measured by the same
coroutines; ``ProcessPoolExecutor`` by their blocking twin, keeping ``callers`` futures in flight.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import psutil
import trio

RunSync = Callable[..., Awaitable[Any]]


def noop(value: int) -> int:
    """The trivial job: what a pool costs per job, with nothing to do."""
    return value


def spin(ms: float) -> float:
    """``ms`` milliseconds of pure-Python CPU work (the process's own CPU time, so a pool process
    that is descheduled meanwhile does not finish early)."""
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass
    return ms


def spin_many(count: int, ms: float) -> int:
    """``count`` CPU-bound jobs back to back in one process, no pool between them."""
    for _ in range(count):
        spin(ms)
    return count


@dataclass(frozen=True)
class PoolWork:
    callers: int  # concurrent callers in the throughput and CPU legs
    jobs: int  # trivial jobs in the throughput leg
    latency_jobs: int  # one at a time
    cpu_jobs: int
    cpu_ms: float
    processes: int = 2

    def to_map(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Figures:
    jobs_per_s: float
    p50_us: float
    p99_us: float
    cpu_wall_s: float
    # CPU seconds the processes other than the pool's used during the CPU-bound leg: the
    # caller (and stereo's master), competing with the jobs for the same cores.
    cpu_others_s: float = 0.0


def others_cpu(pids: list[int]) -> Callable[[], float]:
    """A clock of the CPU seconds (user + system) that processes ``pids`` have used."""
    processes = [psutil.Process(pid) for pid in pids]

    def clock() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    return clock


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


async def measure(run_sync: RunSync, work: PoolWork, others: Callable[[], float]) -> Figures:
    for value in range(50):  # warm up: every pool process started and imported this module
        await run_sync(noop, value)

    async def trivial(count: int) -> None:
        for value in range(count):
            await run_sync(noop, value)

    async def cpu(count: int) -> None:
        for _ in range(count):
            await run_sync(spin, work.cpu_ms)

    async def together(job: Callable[[int], Awaitable[None]], total: int) -> float:
        per = total // work.callers
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(work.callers):
                nursery.start_soon(job, per + (1 if index < total % work.callers else 0))
        return time.perf_counter() - start

    rate = work.jobs / await together(trivial, work.jobs)
    latencies = []
    for value in range(work.latency_jobs):
        start = time.perf_counter()
        await run_sync(noop, value)
        latencies.append((time.perf_counter() - start) * 1e6)
    used = others()
    wall = await together(cpu, work.cpu_jobs)
    used = others() - used
    return Figures(rate, _percentile(latencies, 50), _percentile(latencies, 99), wall, used)


def measure_floor(work: PoolWork) -> float:
    """The CPU-bound leg's floor on this machine now: its jobs split between ``processes``
    bare processes that just run them (no pool, no caller, no hops), first start to last end.
    Beside the ideal, it shows what the machine's other load costs every system alike."""
    with concurrent.futures.ProcessPoolExecutor(work.processes) as executor:
        for future in [executor.submit(noop, n) for n in range(work.processes * 4)]:
            future.result()  # the processes are up and have imported this module
        shares = [work.cpu_jobs // work.processes] * work.processes
        shares[0] += work.cpu_jobs - sum(shares)
        start = time.perf_counter()
        futures = [executor.submit(spin_many, share, work.cpu_ms) for share in shares]
        assert sum(future.result() for future in futures) == work.cpu_jobs
        return time.perf_counter() - start


def measure_executor(executor: concurrent.futures.Executor, work: PoolWork) -> Figures:
    """The same figures for a concurrent.futures executor, ``callers`` futures in flight."""
    for value in range(50):
        executor.submit(noop, value).result()

    def flood(fn: Callable[..., Any], arg: Any, total: int) -> float:
        start = time.perf_counter()
        pending: set[concurrent.futures.Future[Any]] = set()
        for _ in range(total):
            if len(pending) >= work.callers:
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    future.result()
            pending.add(executor.submit(fn, arg))
        for future in concurrent.futures.as_completed(pending):
            future.result()
        return time.perf_counter() - start

    rate = work.jobs / flood(noop, 1, work.jobs)
    latencies = []
    for value in range(work.latency_jobs):
        start = time.perf_counter()
        executor.submit(noop, value).result()
        latencies.append((time.perf_counter() - start) * 1e6)
    others = others_cpu([os.getpid()])
    used = others()
    wall = flood(spin, work.cpu_ms, work.cpu_jobs)
    used = others() - used
    return Figures(rate, _percentile(latencies, 50), _percentile(latencies, 99), wall, used)
