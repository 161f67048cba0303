"""The relay and latency workloads: every peer's legs in turns, quiet and contended.

Peers take turns leg by leg (not peer after peer), and each figure is the median of ``repeat``
rounds: on a shared 2-core machine load drifts over minutes, and a peer that ran all its legs in
a busy spell would otherwise look slower than it is. For the same reason a leg measured in both
conditions takes them in turns too: each round runs every peer quiet, then every peer with the
busy loops (bench/contend.py), which are started before each contended leg and killed after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Literal

from .apps._spec import Mode
from .contend import busy_loops
from .peers import Peer
from .plan import BASE_PAYLOAD, Plan, RelayCase
from .relay import run_leg
from .report import size
from .results import RelayResult, Results, median_round

Condition = Literal["quiet", "contended"]
# The workloads of this module, as --only names them.
RELAY = "relay"
LATENCY = "latency"
RELAY_CONTENDED = "relay-contended"
LATENCY_CONTENDED = "latency-contended"
WORKLOADS = (RELAY, LATENCY, RELAY_CONTENDED, LATENCY_CONTENDED)

Progress = Callable[[str], None]


def run_relay_and_latency(
    results: Results,
    plan: Plan,
    peers: list[Peer],
    only: Iterable[str],
    repeat: int,
    progress: Progress,
) -> None:
    wanted = set(only)
    with ExitStack() as sessions:
        for peer in peers:
            sessions.enter_context(peer.session())
            # One small unrecorded leg first: the first run after start-up pays for cold caches
            # and bytecode compilation, which is not what the table is about.
            run_leg(peer, "relay", 2, BASE_PAYLOAD, 2_000)
        relay_peers = [p for p in peers if "relay" in p.modes]
        for case in dict.fromkeys((*plan.relay, *plan.contended_relay)):
            conditions: list[Condition] = []
            if RELAY in wanted and case in plan.relay:
                conditions.append("quiet")
            if RELAY_CONTENDED in wanted and case in plan.contended_relay:
                conditions.append("contended")
            for condition, rows in _relay_case(case, relay_peers, conditions, repeat, progress):
                target = results.relay if condition == "quiet" else results.relay_contended
                target.extend(rows)
        conditions = []
        if LATENCY in wanted:
            conditions.append("quiet")
        if LATENCY_CONTENDED in wanted:
            conditions.append("contended")
        latency_peers = [p for p in peers if "latency" in p.modes]
        for condition, rows in _latency(plan, latency_peers, conditions, repeat, progress):
            target = results.latency if condition == "quiet" else results.latency_contended
            target.extend(rows)


def leg(
    peer: Peer,
    condition: Condition,
    mode: Mode,
    workers: int,
    payload: int,
    count: int,
    rate: int = 0,
) -> RelayResult:
    """One run of :func:`~bench.relay.run_leg`, under busy loops when contended."""
    if condition == "quiet":
        return run_leg(peer, mode, workers, payload, count, rate)
    with busy_loops():
        return run_leg(peer, mode, workers, payload, count, rate)


def median_rate(rows: list[RelayResult]) -> RelayResult:
    """The run with the median rate; a failed run counts as the slowest."""
    return median_round(rows, lambda row: row.rate if row.ok else -1.0)


def median_latency(rows: list[RelayResult]) -> RelayResult:
    """The run with the median p50 (its p99 and max come with it); a failed run is the worst."""
    return median_round(rows, lambda row: row.p50_us if row.ok and row.p50_us else float("inf"))


Measured = list[tuple[Condition, list[RelayResult]]]


def _relay_case(
    case: RelayCase, peers: list[Peer], conditions: list[Condition], repeat: int, progress: Progress
) -> Measured:
    label = f"W={case.workers} {size(case.payload)} x {case.count}"
    runs: dict[tuple[Condition, str], list[RelayResult]] = {
        (c, p.name): [] for c in conditions for p in peers
    }
    for _ in range(repeat):
        for condition in conditions:
            for peer in peers:
                row = leg(peer, condition, "relay", case.workers, case.payload, case.count)
                runs[condition, peer.name].append(row)
    out: Measured = []
    for condition in conditions:
        rows = []
        for peer in peers:
            mine = runs[condition, peer.name]
            row = median_rate(mine)
            rates = ", ".join(f"{r.rate:,.0f}" for r in mine)
            progress(
                f"relay {condition} {peer.name} {label} -> {row.rate:,.0f} deliveries/s"
                f" (median of {rates}) {row.error or row.note or ''}"
            )
            rows.append(row)
        out.append((condition, rows))
    return out


def _latency(
    plan: Plan, peers: list[Peer], conditions: list[Condition], repeat: int, progress: Progress
) -> Measured:
    runs: dict[tuple[Condition, str], list[RelayResult]] = {
        (c, p.name): [] for c in conditions for p in peers
    }
    for _ in range(repeat):
        for condition in conditions:
            for peer in peers:
                row = leg(
                    peer,
                    condition,
                    "latency",
                    plan.latency_workers,
                    BASE_PAYLOAD,
                    plan.latency_count,
                    plan.latency_rate,
                )
                progress(
                    f"latency {condition} {peer.name} -> p50 {row.p50_us} µs p99 {row.p99_us} µs"
                    f" {row.error or ''}"
                )
                runs[condition, peer.name].append(row)
    return [(c, [median_latency(runs[c, p.name]) for p in peers]) for c in conditions]
