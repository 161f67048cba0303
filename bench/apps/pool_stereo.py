"""The job pool workload in stereo: one worker measures ``worker.run_sync`` against the pool
processes (``stereo run ... -w 1 --pool 2``) and writes its figures to STEREO_BENCH_POOL_OUT."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import trio

from bench.pool_work import PoolWork, measure, others_cpu
from stereo import Worker

POOL_ENV = "STEREO_BENCH_POOL"
OUT_ENV = "STEREO_BENCH_POOL_OUT"


async def serve(worker: Worker) -> None:
    work = PoolWork(**json.loads(os.environ[POOL_ENV]))
    # The caller is this worker; the master relays every job and answer.
    figures = await measure(worker.run_sync, work, others_cpu([os.getpid(), os.getppid()]))
    out = trio.Path(os.environ[OUT_ENV])
    await out.with_suffix(".tmp").write_text(json.dumps(asdict(figures)))
    await out.with_suffix(".tmp").replace(out)
    print("@bench pooldone ok=1", flush=True)
    await trio.sleep_forever()
