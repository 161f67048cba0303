"""The benchmark suite's arithmetic and its saved results (the legs themselves are benchmarks,
run by ``python -m bench``, not tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import render, serving_ceiling, targets_table
from bench.results import Results, ServingResult

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
