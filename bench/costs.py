"""The costs workload: what an idle master uses, and how long replacing a killed worker takes.

Respawn time runs from the harness's SIGKILL to the moment the replacement's ``serve`` starts (a
CLOCK_MONOTONIC reading the app prints). The baseline is a bare ``python -c "import trio,
cbor2"`` run right after each respawn, timed the same way: from before its spawn to a reading
printed right after the imports, so interpreter teardown (which a respawn never waits for) is not
in it. Respawn minus baseline is stereo's own overhead (noticing the death, forking, the hub
handshake, importing stereo and the app).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from .peers.stereo_peer import stereo_command, stereo_run
from .procs import Group, LegFailed, on_cpu_ns_between, threads_on_cpu_ns
from .results import CostResult, median

WORKERS = 4
STARTUP_TIMEOUT = 60.0
SETTLE = 1.0  # let start-up work (imports, handshakes) finish before the idle sample
# stereo backs off before respawning a worker that crashed within 2 s of starting; waiting longer
# between kills measures the plain crash-and-replace path, not the crash-loop brake.
BETWEEN_KILLS = 2.5
BARE_IMPORT = "import trio, cbor2, time; print(time.monotonic_ns())"


def run_costs(idle_seconds: float, kills: int) -> CostResult:
    result = CostResult(idle_seconds=idle_seconds)
    bare: list[float] = []
    argv = stereo_run(stereo_command(), "bench.apps.idle:serve", WORKERS)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="stereo-bench-costs-") as work,
            Group("costs", work) as group,
        ):
            master = psutil.Process(group.spawn(argv, name="stereo master").pid)
            pids = {
                m.int("id"): m.int("pid") for m in group.wait("ready", WORKERS, STARTUP_TIMEOUT)
            }
            time.sleep(SETTLE)
            cpu0, t0 = threads_on_cpu_ns(master.pid), time.monotonic_ns()
            time.sleep(idle_seconds)
            cpu1, t1 = threads_on_cpu_ns(master.pid), time.monotonic_ns()
            result.idle_cpu_pct = 100 * on_cpu_ns_between(cpu0, cpu1) / (t1 - t0)
            result.master_rss_mb = master.memory_info().rss / 2**20
            rss = [psutil.Process(pid).memory_info().rss for pid in pids.values()]
            result.worker_rss_mb = sum(rss) / len(rss) / 2**20
            for k in range(kills):
                slot = k % WORKERS + 1
                if k:
                    time.sleep(BETWEEN_KILLS)
                killed_at = time.monotonic_ns()
                os.kill(pids[slot], signal.SIGKILL)
                ready = group.wait("ready", 1, STARTUP_TIMEOUT)[0]
                if ready.int("id") != slot:
                    raise LegFailed(f"worker {ready.int('id')} restarted; {slot} was killed")
                pids[slot] = ready.int("pid")
                result.respawn_ms.append((ready.int("t") - killed_at) / 1e6)
                # Paired with each respawn: this machine's start-up time drifts by tens of ms.
                bare.append(bare_import_ms())
        if group.exit_codes.get("stereo master"):
            result.note = f"master exit code after SIGTERM: {group.exit_codes['stereo master']}"
    except (LegFailed, psutil.Error, OSError) as exc:
        result.error = str(exc)
    result.bare_import_ms = median(bare) if bare else None
    return result


def bare_import_ms() -> float:
    start = time.monotonic_ns()
    out = subprocess.run(
        [sys.executable, "-c", BARE_IMPORT], capture_output=True, text=True, check=True
    ).stdout
    return (int(out) - start) / 1e6
