"""``python -m bench.bridge_paced``: only the paced run of stereo over NATS JetStream (the
bridge leg's method, bench/bridge.py: 2 hubs x 2 workers on a private ``nats-server -js``,
``--rate`` msg/s over the 4 senders for ``--seconds`` s, latency = send -> receipt at a worker
of the other hub), ``--rounds`` times, each round's figures and the load average printed.
For before/after measurements of the NATS path without the burst and the other systems."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

from .bridge import STEREO, BridgePlan, NatsBroker, run_bridge_run
from .results import BridgeResult

PER_HUB = 2


def _line(rate: int, row: BridgeResult) -> str:
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    if row.error is not None:
        return f"failed: {row.error} (load {load})"
    return (
        f"stereo over NATS paced {rate} msg/s: cross-hub p50 {(row.p50_us or 0) / 1e3:.2f} ms,"
        f" p99 {(row.p99_us or 0) / 1e3:.2f} ms, max {(row.max_us or 0) / 1e3:.2f} ms"
        f" (broker PING p50 {row.rtt_p50_us or 0:.0f} µs); missing {row.missing},"
        f" duplicates {row.duplicates}, reordered {row.reordered}; load {load}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge_paced", description=__doc__)
    parser.add_argument("--rate", type=int, default=500, help="msg/s over all senders (500)")
    parser.add_argument("--seconds", type=int, default=5, help="length of one run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs in a row (3)")
    args = parser.parse_args(argv)
    if (reason := NatsBroker.missing()) is not None:
        print(f"cannot run: {reason}")
        return 1
    plan = BridgePlan(PER_HUB, 1, args.rate, args.seconds, 120.0)
    with (
        tempfile.TemporaryDirectory(prefix="stereo-bench-natspaced-") as work,
        NatsBroker(work) as broker,
    ):
        for _ in range(args.rounds):
            print(_line(args.rate, run_bridge_run(STEREO, broker, plan, "paced")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
