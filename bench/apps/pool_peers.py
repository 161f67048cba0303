"""The job pool workload's peers, one per run: ``python -m bench.apps.pool_peers NAME`` prints
one JSON line of :class:`bench.pool_work.Figures` (the work described in STEREO_BENCH_POOL);
``... floor`` prints the CPU-bound leg's floor instead."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
from dataclasses import asdict
from functools import partial

import trio

from bench.pool_work import PoolWork, measure, measure_executor, measure_floor, others_cpu

POOL_ENV = "STEREO_BENCH_POOL"
FLOOR = "floor"  # not a peer: the CPU-bound jobs in bare processes (bench.pool_work.measure_floor)


def main(name: str) -> None:
    work = PoolWork(**json.loads(os.environ[POOL_ENV]))
    if name == FLOOR:
        print(json.dumps({"cpu_floor_s": measure_floor(work)}), flush=True)
        return
    if name == "trio_parallel.run_sync":
        import trio_parallel  # type: ignore[import-untyped]

        async def run() -> object:
            limiter = trio.CapacityLimiter(work.processes)
            async with trio_parallel.open_worker_context() as context:
                run_sync = partial(context.run_sync, limiter=limiter)
                return await measure(run_sync, work, others_cpu([os.getpid()]))

        figures = trio.run(run)
    elif name == "ProcessPoolExecutor(2)":
        with concurrent.futures.ProcessPoolExecutor(work.processes) as executor:
            figures = measure_executor(executor, work)
    else:
        raise SystemExit(f"unknown peer {name!r}")
    print(json.dumps(asdict(figures)), flush=True)  # type: ignore[call-overload]


if __name__ == "__main__":
    main(sys.argv[1])
