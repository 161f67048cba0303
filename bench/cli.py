"""``python -m bench``: run the workloads, print the tables, write JSON and charts.

A peer whose runtime is missing is skipped with a loud note on stderr and in the tables, never
silently; so is a workload that cannot run at all (stereo's own legs when the core is not
installed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from . import floor, machine
from .asgi import run_asgi
from .bridge import run_bridge
from .contend import busy_loops
from .costs import run_costs
from .load import WRK_MISSING, tool_name
from .peers import Peer, all_peers
from .peers.stereo_peer import installation
from .plan import FULL, QUICK
from .pool import run_pool
from .relay_rounds import LATENCY_CONTENDED, run_relay_and_latency
from .relay_rounds import WORKLOADS as RELAY_WORKLOADS
from .report import render
from .results import BASELINE, Results, ServingResult, median_round
from .serving import run_serving_leg

WORKLOADS = (*RELAY_WORKLOADS, "serving", "costs", "asgi", "bridge", "pool", "metrics")
# Not a tracked path: a run overwrites the results, tables and charts in its output directory.
OUT = Path(__file__).resolve().parent / "out"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (small counts)")
    parser.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated workloads to run (default: all of {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--peers",
        default=None,
        help="comma-separated peers for the relay and latency workloads, quiet and contended"
        " (default: all available)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="STEREO",
        help="another installation's stereo command (e.g. OTHER_VENV/bin/stereo), run as the"
        f" peer {BASELINE} in the relay and latency legs, for a before/after comparison",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="rounds of the relay, latency, serving, asgi and bridge legs, taken in turns by the"
        " peers; the tables show each one's median round (default: 5)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="output directory (default: bench/out/, which git ignores; --out docs/bench"
        " replaces the committed results)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-render tables and charts from a saved results.json without running anything",
    )
    parser.add_argument(
        "--relay-cases",
        default=None,
        metavar="W:BYTES,...",
        help="run only these relay legs of the plan, e.g. 4:64 (more rounds at one point)",
    )
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    if args.baseline is not None:
        args.baseline = os.path.abspath(shutil.which(args.baseline) or args.baseline)
    if args.relay_cases is not None:
        try:
            args.relay_cases = {
                (int(w), int(b))
                for w, b in (case.split(":") for case in args.relay_cases.split(","))
            }
        except ValueError:
            parser.error("--relay-cases takes W:BYTES pairs, e.g. 4:64,8:64")
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    # Before anything runs: the asgi legs compare servers at rates only wrk reaches.
    if "asgi" in args.only and args.from_json is None and shutil.which("wrk") is None:
        parser.error(WRK_MISSING)
    return args


def _loud(results: Results, note: str) -> None:
    """A note that must not be missed: on stderr now, and at the top of the tables."""
    results.skipped.append(note)
    print(f"\n!!! SKIPPED: {note}\n", file=sys.stderr, flush=True)


def _progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _available_peers(results: Results, wanted: str | None, baseline: str | None) -> list[Peer]:
    """The peers asked for (a --baseline always is) that can run here."""
    peers = all_peers(baseline)
    if wanted is not None:
        names = {n.strip() for n in wanted.split(",")} | {BASELINE}
        peers = [p for p in peers if p.name in names]
    ready = []
    for peer in peers:
        reason = peer.missing()
        if reason is None:
            ready.append(peer)
        else:
            _loud(results, f"{peer.name}: {reason}")
    return ready


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        results = Results.load(args.from_json)
    else:
        plan = QUICK if args.quick else FULL
        if args.relay_cases is not None:
            cases = tuple(c for c in plan.relay if (c.workers, c.payload) in args.relay_cases)
            if not cases:
                raise SystemExit("--relay-cases matches no relay leg of the plan")
            contended = tuple(c for c in plan.contended_relay if c in cases)
            plan = replace(plan, relay=cases, contended_relay=contended)
        results = Results(
            machine=machine.describe(),
            plan={"quick": args.quick, "repeat": args.repeat, **asdict(plan)},
        )
        if (note := machine.busy_note()) is not None:
            _loud(results, f"before the run, {note}")
        if args.baseline is not None:
            results.machine[BASELINE] = installation(args.baseline)
        peers = _available_peers(results, args.peers, args.baseline)
        stereo_ok = any(p.name == "stereo" for p in peers)
        if "relay-contended" in args.only and not plan.contended_relay:
            _loud(results, "relay-contended: --relay-cases leaves none of its legs (W=4 / 64 B)")
        if set(RELAY_WORKLOADS) & set(args.only):
            run_relay_and_latency(results, plan, peers, args.only, max(1, args.repeat), _progress)
        if "latency" in args.only:
            for echo in ("blocking", "trio"):
                _progress(f"hop floor, {echo} echo")
                results.floor.append(floor.measure(echo))
        if LATENCY_CONTENDED in args.only:
            for echo in ("blocking", "trio"):
                _progress(f"hop floor, {echo} echo, contended")
                with busy_loops():
                    results.floor_contended.append(floor.measure(echo))
        if {"serving", "costs"} & set(args.only) and not stereo_ok:
            _loud(results, "serving and costs need stereo itself, which cannot run (see above)")
        elif "serving" in args.only:
            if tool_name() != "wrk":
                _loud(
                    results,
                    "wrk is not installed: serving uses the Python load generator, "
                    "which is likely the bottleneck (apt-get install wrk)",
                )
            # Legs take turns, as for the relay, and each figure is the median of the rounds.
            rounds: dict[tuple[int, bool], list[ServingResult]] = {
                leg: [] for leg in plan.serving_legs
            }
            for _ in range(max(1, args.repeat)):
                for workers, reuse_port in plan.serving_legs:
                    row = run_serving_leg(
                        workers, plan.serving_connections, plan.serving_seconds, reuse_port
                    )
                    _progress(
                        f"serving {row.leg} -> {row.rps:,.0f} req/s"
                        f" {row.requests} {row.error or ''}"
                    )
                    rounds[workers, reuse_port].append(row)
            for leg in plan.serving_legs:
                results.serving.append(
                    median_round(rounds[leg], lambda r: r.rps if r.error is None else -1.0)
                )
        if "costs" in args.only and stereo_ok:
            _progress("costs")
            results.costs = run_costs(plan.idle_seconds, plan.kills)
        if "asgi" in args.only:
            results.asgi, results.fanout = run_asgi(
                plan, max(1, args.repeat), _progress, partial(_loud, results)
            )
        if "bridge" in args.only:
            results.bridge = run_bridge(
                plan, max(1, args.repeat), _progress, partial(_loud, results)
            )
        if "pool" in args.only:
            results.pool = run_pool(
                args.quick, max(1, args.repeat), _progress, partial(_loud, results)
            )
        if "metrics" in args.only and stereo_ok:
            from .metrics import run_metrics

            results.metrics = run_metrics(max(1, args.repeat), args.quick, _progress)
        results.machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        if (note := machine.busy_note()) is not None:
            _loud(results, f"at the end of the run, {note}")
        results.save(out / "results.json")
    tables = render(results)
    (out / "tables.md").write_text(tables)
    from .charts import write_charts  # matplotlib is slow to import; only now is it needed

    charts = write_charts(results, out)
    print(tables)
    print(
        f"results: {out / 'results.json'}; tables: {out / 'tables.md'}; charts: "
        + ", ".join(str(c) for c in charts)
    )
    return 0
