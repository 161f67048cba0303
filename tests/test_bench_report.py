"""The benchmark suite's arithmetic and its saved results (the legs themselves are benchmarks,
run by ``python -m bench``, not tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import render, serving_ceiling, targets_table
from bench.results import BASELINE, RelayResult, Results, ServingResult

ROOT = Path(__file__).resolve().parent.parent


def serving(leg: str, workers: int, rps: float, server: float, load: float) -> ServingResult:
    return ServingResult(
        leg=leg,
        workers=workers,
        tool="wrk",
        rps=rps,
        seconds=10.0,
        server_cpu_s=10.0 * server,
        load_cpu_s=10.0 * load,
        requests={str(w): int(rps * 10 / workers) for w in range(1, workers + 1)},
    )


def test_the_serving_ceiling_counts_the_load_generators_share_of_the_cores() -> None:
    results = Results(machine={"cpus": "2"}, plan={})
    results.serving = [
        serving("plain trio", 1, 40_000, 1.0, 0.35),
        serving("stereo -w 1", 1, 40_000, 1.0, 0.35),  # one core, and wrk takes 0.35 of another
        serving("stereo -w 2", 2, 56_000, 1.6, 0.4),
    ]
    # Two cores over 1.35 cores per 40,000 req/s: at most 2 / 1.35 = 1.48x the -w 1 rate.
    assert serving_ceiling(results) == pytest.approx(2 / 1.35)
    table = targets_table(results)
    assert "| serving -w 2 >= 1.6x -w 1 | 1.40x (this machine's ceiling: 1.48x) | MISS |" in table


def relay(peer: str, mode: str, wall_s: float, p50_us: float | None = None) -> RelayResult:
    """A loss-free W=4 / 64 B leg of 25,000 messages per sender (relay) or 2,500 (latency)."""
    count = 25_000 if mode == "relay" else 2_500
    expected = 4 * (4 * count if mode == "relay" else count)
    return RelayResult(
        peer=peer,
        mode=mode,
        workers=4,
        payload=64,
        count=count,
        expected=expected,
        deliveries=expected,
        wall_s=wall_s,
        relay_cpu_pct=20.0,
        p50_us=p50_us,
        p99_us=None if p50_us is None else 3 * p50_us,
        max_us=None if p50_us is None else 10 * p50_us,
    )


def test_a_baseline_is_one_more_peer_with_its_ratio_and_never_taken_for_stereo(
    tmp_path: Path,
) -> None:
    results = Results(machine={BASELINE: "/old/bin/stereo: stereo 0.1.0 at /old/stereo"}, plan={})
    # 400,000 deliveries each: 0.4 s is 1.00 M/s, 0.5 s 800 k/s, 0.8 s 500 k/s.
    results.relay = [
        relay("stereo", "relay", 0.4),
        relay(BASELINE, "relay", 0.5),
        relay("zmq-proxy", "relay", 0.8),
    ]
    results.latency = [
        relay("stereo", "latency", 5.0, p50_us=300),
        relay(BASELINE, "latency", 5.0, p50_us=400),
        relay("zmq-proxy", "latency", 5.0, p50_us=200),
    ]
    # Saved and loaded again, as --from-json renders it.
    results.save(tmp_path / "results.json")
    tables = render(Results.load(tmp_path / "results.json"))
    assert (
        "**Baseline:** `stereo-baseline` is /old/bin/stereo: stereo 0.1.0 at /old/stereo," in tables
    )
    assert "| W | payload | msgs/worker | stereo | stereo-baseline | zmq-proxy |" in tables
    assert "| 4 | 64 B | 25,000 | 1.00 M | 800.0 k (1.25x) | 500.0 k (2.00x) |" in tables
    assert "| W | payload | stereo | stereo-baseline | zmq-proxy |" in tables
    assert "| stereo-baseline | 400 | 1200 | 4000 | 10,000/10,000 | 0.75x / 0.75x |" in tables
    assert "| zmq-proxy | 200 | 600 | 2000 | 10,000/10,000 | 1.50x / 1.50x |" in tables
    # The targets stay stereo's own against the other runtimes.
    assert "| relay W=4/64 B >= 1x zmq-proxy | 2.00x | PASS |" in tables
    assert "| latency p50 <= 150 µs | 300 µs | MISS |" in tables


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "docs" / "bench").rglob("results.json")),
    ids=lambda p: str(p.parent.relative_to(ROOT)),
)
def test_the_committed_results_still_load_and_render(path: Path) -> None:
    # docs/benchmarks.md quotes these runs; --from-json must keep reading every one of them.
    results = Results.load(path)
    tables = render(results)
    assert "### Targets" in tables
    assert results.relay or results.serving
