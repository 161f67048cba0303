"""Run one relay or latency leg for one peer and reduce its workers' result files.

Throughput is deliveries over the wall time from the common start (the earliest worker to pass
the barrier) to the last receipt anywhere; both ends are CLOCK_MONOTONIC readings taken inside
the workers, so the harness's own latency in noticing them does not count. The relaying
process's CPU is sampled all along the leg and read over that same window (bench/cpu_sampler.py);
over the deliveries, that is its CPU per delivery. All of the leg's processes are sampled the
same way: the CPU the peer got as a whole, in cores.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import psutil

from .apps._spec import SPEC_ENV, Mode, Spec
from .cpu_sampler import CpuSampler
from .peers import Peer
from .procs import Group, LegFailed
from .results import RelayResult, percentile

STARTUP_TIMEOUT = 60.0
# A worker gives up this long after its start and reports what it has (the leg then shows loss).
WORKER_TIMEOUT = 300.0


def run_leg(
    peer: Peer, mode: Mode, workers: int, payload: int, count: int, rate: int = 0
) -> RelayResult:
    result = RelayResult(
        peer=peer.name,
        mode=mode,
        workers=workers,
        payload=payload,
        count=count,
        expected=workers * (workers * count if mode == "relay" else count),
    )
    with tempfile.TemporaryDirectory(prefix="stereo-bench-") as work:
        spec = Spec(mode, workers, count, payload, rate, work, WORKER_TIMEOUT)
        spec = replace(spec, endpoints=peer.endpoints(spec, work))
        env = {**os.environ, SPEC_ENV: spec.to_json()}
        label = f"{peer.name} {mode} W={workers} payload={payload}"
        try:
            with Group(label, work) as group:
                relaying = peer.start(group, spec, env)
                with (
                    CpuSampler(relaying) as cpu,
                    CpuSampler(relaying, partial(leg_pids, group)) as everything,
                ):
                    group.wait("go", workers, STARTUP_TIMEOUT)
                    group.wait("done", workers, WORKER_TIMEOUT + 30)
            bad_exits = {k: v for k, v in group.exit_codes.items() if k.startswith("stereo") and v}
            if bad_exits:
                result.note = f"exit codes after SIGTERM: {bad_exits}"
        except (LegFailed, psutil.Error) as exc:
            result.error = str(exc)
            return result
        window = _reduce(
            result, [json.loads(p.read_text()) for p in Path(work).glob("worker-*.json")]
        )
    if window is not None and (cpu_s := cpu.between(*window)) is not None:
        result.relay_cpu_s = cpu_s
        result.relay_cpu_pct = 100 * cpu_s / result.wall_s
    if window is not None:
        result.peer_cpu_s = everything.between(*window)
    return result


def leg_pids(group: Group) -> list[int]:
    """Every process of the leg: those the harness started and their descendants (stereo's
    workers are its master's children; the ZeroMQ and Redis workers are the harness's). Read
    from /proc's children lists, a few small files, not by scanning every process: this runs
    every few milliseconds beside the leg."""
    pids: list[int] = []
    todo = [proc.pid for proc in group.procs]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children(pid)
    return pids


def children(pid: int) -> list[int]:
    """The pids of a process's children (none once it is gone)."""
    lists = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if not lists:  # gone, or a kernel without children lists (CONFIG_PROC_CHILDREN)
        try:
            return [child.pid for child in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    found: list[int] = []
    for path in lists:
        try:
            found += [int(c) for c in path.read_text().split()]
        except OSError:  # the thread or the process ended meanwhile
            continue
    return found


def _reduce(result: RelayResult, workers: list[dict[str, object]]) -> tuple[int, int] | None:
    """Fill in the figures; return the timed window (CLOCK_MONOTONIC ns), if there was one."""
    starts = [int(str(w["start_ns"])) for w in workers]
    lasts = [int(str(w["last_ns"])) for w in workers if int(str(w["received"]))]
    result.deliveries = sum(int(str(w["received"])) for w in workers)
    window = None
    if starts and lasts:
        window = min(starts), max(lasts)
        result.wall_s = (window[1] - window[0]) / 1e9
    if result.deliveries < result.expected:
        result.note = f"lost {result.expected - result.deliveries} of {result.expected} deliveries"
    latencies: list[int] = []
    for w in workers:
        values = w["latencies_ns"]
        assert isinstance(values, list)
        latencies.extend(int(v) for v in values)
    if latencies:
        latencies.sort()
        result.p50_us = percentile(latencies, 50) / 1e3
        result.p99_us = percentile(latencies, 99) / 1e3
        result.max_us = latencies[-1] / 1e3
    return window
