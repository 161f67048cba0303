"""Render results as Markdown tables (printed, and pasted into docs/benchmarks.md) and check the
targets of issue 5 against them.

Ratios are always stereo / peer, so for throughput above 1 means stereo is faster and for
latency above 1 means stereo is slower.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from functools import partial

from .results import (
    BASELINE,
    AsgiHttpResult,
    BridgeResult,
    FanoutResult,
    PoolResult,
    RelayResult,
    Results,
    ServingResult,
)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def size(n: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _peers(rows: Sequence[RelayResult]) -> list[str]:
    return list(dict.fromkeys(r.peer for r in rows))


def find_row(
    rows: Sequence[RelayResult], peer: str, workers: int, payload: int
) -> RelayResult | None:
    for r in rows:
        if (r.peer, r.workers, r.payload) == (peer, workers, payload):
            return r
    return None


def _cell(
    r: RelayResult | None, base: RelayResult | None, value: Callable[[RelayResult], str]
) -> str:
    if r is None:
        return "skipped"
    if r.error is not None:
        return "failed"
    text = value(r)
    if r.deliveries < r.expected:
        text += " (lossy)"
    if base is not None and base is not r and base.ok and r.ok:
        text += f" ({_ratio(base.rate, r.rate)})"
    return text


def relay_table(results: Results) -> str:
    rows = results.relay
    peers = _peers(rows)
    cases = list(dict.fromkeys((r.workers, r.payload, r.count) for r in rows))
    out = []
    for w, p, n in cases:
        base = find_row(rows, "stereo", w, p)
        out.append(
            [str(w), size(p), f"{n:,}"]
            + [_cell(find_row(rows, peer, w, p), base, lambda r: rate(r.rate)) for peer in peers]
        )
    return table(["W", "payload", "msgs/worker", *peers], out)


def relay_cpu_table(results: Results) -> str:
    rows = results.relay
    peers = _peers(rows)
    cases = list(dict.fromkeys((r.workers, r.payload) for r in rows))
    out = []
    for w, p in cases:
        cells = []
        for peer in peers:
            r = find_row(rows, peer, w, p)
            cpu = r.relay_cpu_pct if r is not None else None
            ns = r.relay_ns_per_delivery if r is not None else None
            text = f"{cpu:.0f} %" if cpu is not None else "-"
            cells.append(text + (f", {ns:,.0f} ns/delivery" if ns is not None else ""))
        out.append([str(w), size(p), *cells])
    return table(["W", "payload", *peers], out)


def latency_table(results: Results) -> str:
    rows = results.latency
    base = next((r for r in rows if r.peer == "stereo" and r.error is None), None)
    out = []
    for r in rows:
        if r.error is not None or r.p50_us is None:
            out.append([r.peer, "failed", "", "", "", ""])
            continue
        out.append(
            [
                r.peer,
                f"{r.p50_us:.0f}",
                f"{r.p99_us:.0f}",
                f"{r.max_us:.0f}",
                f"{r.deliveries:,}/{r.expected:,}",
                _ratio(base.p50_us, r.p50_us) + " / " + _ratio(base.p99_us, r.p99_us)
                if base is not None
                else "-",
            ]
        )
    return table(["peer", "p50 µs", "p99 µs", "max µs", "received", "stereo/peer p50 / p99"], out)


def floor_table(results: Results) -> str:
    rows = [[f.echo, f"{f.p50_us:.0f}", f"{f.p99_us:.0f}"] for f in results.floor]
    return table(["echoing process", "hop p50 µs", "hop p99 µs"], rows)


def _shares(r: ServingResult) -> str:
    total = sum(r.requests.values())
    if not total:
        return "-"
    return " / ".join(f"w{k}: {100 * v / total:.0f} %" for k, v in sorted(r.requests.items()))


def serving_table(results: Results) -> str:
    plain = next((r for r in results.serving if r.workers == 1 and r.leg.startswith("plain")), None)
    out = []
    for r in results.serving:
        if r.error is not None:
            out.append([r.leg, "failed", "", "", "", ""])
            continue
        imbalance = r.imbalance
        out.append(
            [
                r.leg,
                f"{r.rps:,.0f}",
                _ratio(r.rps, plain.rps) if plain is not None else "-",
                _shares(r),
                f"{imbalance:.2f}" if imbalance is not None else "-",
                _cores(r.core_share(r.server_cpu_s)),
                _cores(r.core_share(r.load_cpu_s)),
                r.errors or "none",
            ]
        )
    header = ["leg", "req/s", "vs plain", "share per worker", "busiest/idlest"]
    header += ["server CPU", "load generator CPU", "errors"]
    return table(header, out)


def _cores(share: float) -> str:
    return f"{share:.2f} cores" if share else "-"


def serving_ceiling(results: Results) -> float | None:
    """The best ``-w 2 / -w 1`` this machine allows, from the ``-w 1`` leg's CPU figures.

    The load generator runs on the same cores. At ``-w 1`` a request costs the server ``a`` and
    the generator ``b`` CPU seconds; with every core busy, at most ``cores / (a + b)`` requests a
    second get served, which over the ``-w 1`` rate is ``cores / (server share + generator
    share)`` of the ``-w 1`` leg.
    """
    w1 = next((r for r in results.serving if r.leg == "stereo -w 1" and r.error is None), None)
    cores = int(results.machine.get("cpus", "0") or 0)
    if w1 is None or not cores or not w1.server_cpu_s:
        return None
    return cores / (w1.core_share(w1.server_cpu_s) + w1.core_share(w1.load_cpu_s))


def costs_table(results: Results) -> str:
    c = results.costs
    if c is None:
        return "(not run)"
    if c.error is not None:
        return f"failed: {c.error}"

    def ms(x: float | None) -> str:
        return f"{x:.1f} ms" if x is not None else "-"

    respawns = ", ".join(f"{x:.0f}" for x in c.respawn_ms)
    rows = [
        ["master CPU, 4 idle workers", f"{c.idle_cpu_pct:.3f} % over {c.idle_seconds:g} s"],
        ["master RSS", f"{c.master_rss_mb:.1f} MB"],
        ["worker RSS (mean)", f"{c.worker_rss_mb:.1f} MB"],
        [
            "SIGKILL -> replacement serving (median)",
            f"{ms(c.respawn_median_ms)} (runs: {respawns})",
        ],
        ["bare `import trio, cbor2` (median)", ms(c.bare_import_ms)],
        ["respawn overhead", ms(c.respawn_overhead_ms)],
    ]
    return table(["cost", "value"], rows)


def targets_table(results: Results) -> str:
    """Issue 5's targets, each PASS / MISS / n.a. from this run's figures."""
    rows: list[list[str]] = []

    def check(name: str, value: float | None, ok: Callable[[float], bool], shown: str) -> None:
        verdict = "n.a." if value is None else ("PASS" if ok(value) else "MISS")
        rows.append([name, shown if value is not None else "-", verdict])

    def relay_rate(peer: str) -> float | None:
        r = find_row(results.relay, peer, 4, 64)
        return r.rate if r is not None and r.ok else None

    stereo = relay_rate("stereo")
    for peer, goal in (("zmq-proxy", 1.0), ("node-cluster", 5.0)):
        other = relay_rate(peer)
        ratio = stereo / other if stereo and other else None
        check(
            f"relay W=4/64 B >= {goal:g}x {peer}",
            ratio,
            partial(operator.le, goal),
            f"{ratio:.2f}x" if ratio else "",
        )
    base = find_row(results.relay, "stereo", 4, 64)
    cpu = base.relay_cpu_pct if base is not None else None
    check(
        "master CPU during relay well under a core (< 80 %)",
        cpu,
        lambda x: x < 80,
        f"{cpu:.0f} %" if cpu is not None else "",
    )
    lat = next((r for r in results.latency if r.peer == "stereo" and r.error is None), None)
    p50 = lat.p50_us if lat is not None else None
    p99 = lat.p99_us if lat is not None else None
    trio_hop = next((f for f in results.floor if f.echo == "trio"), None)
    floor50 = f" (two trio hops: {2 * trio_hop.p50_us:.0f} µs)" if trio_hop else ""
    floor99 = f" (two trio hops: {2 * trio_hop.p99_us:.0f} µs)" if trio_hop else ""
    check("latency p50 <= 150 µs", p50, lambda x: x <= 150, f"{p50:.0f} µs{floor50}" if p50 else "")
    check("latency p99 <= 500 µs", p99, lambda x: x <= 500, f"{p99:.0f} µs{floor99}" if p99 else "")
    by_leg = {r.leg: r for r in results.serving if r.error is None}
    plain, w1, w2 = by_leg.get("plain trio"), by_leg.get("stereo -w 1"), by_leg.get("stereo -w 2")
    r1 = w1.rps / plain.rps if w1 and plain else None
    r2 = w2.rps / w1.rps if w1 and w2 else None
    check("serving -w 1 within 3 % of plain", r1, lambda x: x >= 0.97, f"{r1:.3f}x" if r1 else "")
    ceiling = serving_ceiling(results)
    check(
        "serving -w 2 >= 1.6x -w 1",
        r2,
        lambda x: x >= 1.6,
        (f"{r2:.2f}x" if r2 else "")
        + (f" (this machine's ceiling: {ceiling:.2f}x)" if r2 and ceiling else ""),
    )
    imb = w2.imbalance if w2 else None
    check("serving busiest/idlest <= 1.5", imb, lambda x: x <= 1.5, f"{imb:.2f}" if imb else "")
    rp = by_leg.get("stereo -w 2 --reuse-port")
    if rp is not None:
        r2rp = rp.rps / w1.rps if w1 else None
        check(
            "serving -w 2 --reuse-port >= 1.6x -w 1",
            r2rp,
            lambda x: x >= 1.6,
            f"{r2rp:.2f}x" if r2rp else "",
        )
        imb_rp = rp.imbalance
        check(
            "serving --reuse-port busiest/idlest <= 1.5",
            imb_rp,
            lambda x: x <= 1.5,
            f"{imb_rp:.2f}" if imb_rp else "",
        )
    c = results.costs if results.costs is not None and results.costs.error is None else None
    idle = c.idle_cpu_pct if c else None
    rss = c.master_rss_mb if c else None
    over = c.respawn_overhead_ms if c else None
    check(
        "idle master CPU < 0.2 %",
        idle,
        lambda x: x < 0.2,
        f"{idle:.3f} %" if idle is not None else "",
    )
    check("idle master RSS < 40 MB", rss, lambda x: x < 40, f"{rss:.1f} MB" if rss else "")
    check(
        "respawn overhead < 50 ms",
        over,
        lambda x: x < 50,
        f"{over:.1f} ms" if over is not None else "",
    )
    return table(["target (issue 5)", "this run", "verdict"], rows)


# The asgi workload's servers, as bench/asgi.py names them (not imported: rendering a saved
# JSON must not need the servers' packages).
STEREO = "stereo"
UVICORN_FAST = "uvicorn httptools+uvloop"
HYPERCORN_TRIO = "hypercorn trio"
BROADCASTER = "uvicorn + broadcaster"
GENERATOR_BUSY = 0.8  # cores


def _us(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def _http_row(results: Results, app: str, server: str) -> AsgiHttpResult | None:
    return next(
        (r for r in results.asgi if (r.app, r.server) == (app, server) and r.error is None), None
    )


def asgi_http_table(results: Results) -> str:
    """One row per (app, server): the stereo / server ratio is stereo's rate over the row's."""
    out = []
    for r in results.asgi:
        if r.error is not None:
            out.append([r.app, r.server, f"failed: {r.error[:120]}", "", "", "", "", "", ""])
            continue
        stereo = _http_row(results, r.app, STEREO)
        out.append(
            [
                r.app,
                r.server,
                f"{r.rps:,.0f}",
                _ratio(stereo.rps, r.rps) if stereo is not None and r is not stereo else "-",
                _us(r.p50_us),
                _us(r.p99_us),
                f"{r.cpu_per_request_us:.0f}" if r.cpu_per_request_us else "-",
                _cores(r.load_cpu_s / r.seconds if r.seconds else 0.0),
                r.errors or "none",
            ]
        )
    header = ["app", "server", "req/s", "stereo/server", "p50 µs", "p99 µs"]
    header += ["server CPU µs/req", "wrk CPU", "errors"]
    return table(header, out)


def _loss(r: FanoutResult) -> str:
    text = f"{r.deliveries:,}/{r.expected:,}"
    if r.lost:
        text += f" (**{r.lost:,} lost**)"
    if r.duplicates:
        text += f" ({r.duplicates:,} duplicates)"
    return text


def fanout_table(results: Results) -> str:
    bursts = {r.server: r for r in results.fanout if r.mode == "burst"}
    paced = {r.server: r for r in results.fanout if r.mode == "paced"}
    out = []
    for server in dict.fromkeys(r.server for r in results.fanout):
        b, p = bursts.get(server), paced.get(server)
        row = [server]
        if b is None or b.error is not None:
            row += [f"failed: {b.error[:120]}" if b and b.error else "-", "", "", "", ""]
        else:
            cpu = b.cpu_per_delivery_us
            broker = (
                f" (redis {1e6 * b.broker_cpu_s / b.deliveries:.1f})"
                if b.broker_cpu_s is not None and b.deliveries
                else ""
            )
            row += [
                f"{b.rate:,.0f}",
                _loss(b),
                f"{cpu:.1f}{broker}" if cpu is not None else "-",
                _cores(b.load_cpu_s / b.wall_s if b.wall_s else 0.0),
                " ".join(str(n) for n in sorted(b.spread.values())) + f" ({b.connections} conns)",
            ]
        if p is None or p.error is not None:
            row += [f"failed: {p.error[:120]}" if p and p.error else "-", ""]
        else:
            row += [f"{_us(p.p50_us)} / {_us(p.p99_us)} / {_us(p.max_us)}", _loss(p)]
        out.append(row)
    header = ["server", "deliveries/s", "burst received", "server CPU µs/delivery"]
    header += ["generator CPU", "receivers per worker", "paced p50 / p99 / max µs"]
    header += ["paced received"]
    return table(header, out)


def asgi_targets_table(results: Results) -> str:
    """The asgi workload's targets, PASS / MISS / n.a. (ratios stereo / peer)."""
    rows: list[list[str]] = []

    def check(name: str, ratio: float | None, ok: Callable[[float], bool] | None) -> None:
        if ratio is None:
            rows.append([name, "-", "n.a."])
        else:
            verdict = "-" if ok is None else ("PASS" if ok(ratio) else "MISS")
            rows.append([name, f"{ratio:.2f}x", verdict])

    def http_ratio(app: str, peer: str) -> float | None:
        mine, theirs = _http_row(results, app, STEREO), _http_row(results, app, peer)
        return mine.rps / theirs.rps if mine and theirs and theirs.rps else None

    check(
        "raw ASGI req/s >= 1.0x uvicorn httptools+uvloop",
        http_ratio("raw ASGI", UVICORN_FAST),
        partial(operator.le, 1.0),
    )
    check(
        "FastAPI req/s >= 3x hypercorn trio",
        http_ratio("FastAPI", HYPERCORN_TRIO),
        partial(operator.le, 3.0),
    )
    check(
        "FastAPI req/s vs uvicorn httptools+uvloop (reported)",
        http_ratio("FastAPI", UVICORN_FAST),
        None,
    )

    def fanout(server: str, mode: str) -> FanoutResult | None:
        return next(
            (r for r in results.fanout if (r.server, r.mode) == (server, mode) and r.ok), None
        )

    sb, pb = fanout(STEREO, "burst"), fanout(BROADCASTER, "burst")
    check(
        "fan-out deliveries/s >= 2x uvicorn + broadcaster",
        sb.rate / pb.rate if sb and pb and pb.rate else None,
        partial(operator.le, 2.0),
    )
    scpu = sb.cpu_per_delivery_us if sb else None
    pcpu = pb.cpu_per_delivery_us if pb else None
    check(
        "fan-out CPU per delivery <= 0.5x (peer: uvicorn + redis-server)",
        scpu / pcpu if scpu and pcpu else None,
        partial(operator.ge, 0.5),
    )
    sp, pp = fanout(STEREO, "paced"), fanout(BROADCASTER, "paced")
    check(
        "fan-out p99 at 500 msg/s lower (< 1.0x)",
        sp.p99_us / pp.p99_us if sp and pp and sp.p99_us and pp.p99_us else None,
        partial(operator.gt, 1.0),
    )
    # One Python process; on two shared cores it competes with the server, and near a full
    # core it would be what sets the rate rather than the server.
    share = sb.load_cpu_s / sb.wall_s if sb and sb.wall_s else None
    rows.append(
        [
            "fan-out generator not the bottleneck (< 0.8 core during stereo's burst)",
            f"{share:.2f} cores" if share is not None else "-",
            "n.a." if share is None else ("PASS" if share < GENERATOR_BUSY else "MISS"),
        ]
    )
    lossy = [
        f"{r.server} {r.mode}: {r.lost} lost"
        for r in results.fanout
        if r.error is None and (r.lost or r.duplicates)
    ]
    rows.append(
        [
            "fan-out: every message at every receiver, both servers",
            "; ".join(lossy) or "no loss",
            "MISS" if lossy else "PASS",
        ]
    )
    return table(["target (asgi)", "stereo / peer", "verdict"], rows)


BRIDGE_STEREO = "stereo"
BRIDGE_TARGET = 5.0  # stereo's deliveries/s over the pub/sub peer's, across two hubs


def _bridge_loss(r: BridgeResult) -> str:
    """Delivered of expected, with every kind of trouble the ledgers saw, loudly."""
    text = f"{r.deliveries:,}/{r.expected:,}"
    trouble = [
        f"{n:,} {what}"
        for n, what in (
            (r.missing, "missing"),
            (r.duplicates, "duplicates"),
            (r.reordered, "reordered"),
            (r.reconnects, "resubscribed"),
        )
        if n
    ]
    return text + (f" (**{', '.join(trouble)}**)" if trouble else "")


def _bridge_row(results: Results, broker: str, system: str, mode: str) -> BridgeResult | None:
    return next(
        (r for r in results.bridge if (r.broker, r.system, r.mode) == (broker, system, mode)),
        None,
    )


def bridge_table(results: Results) -> str:
    """One row per (broker, system): the burst's rate and loss, the paced run's cross-hub
    latency beside the broker's own PING round trip, and its loss."""
    out = []
    for broker, system in dict.fromkeys((r.broker, r.system) for r in results.bridge):
        b = _bridge_row(results, broker, system, "burst")
        p = _bridge_row(results, broker, system, "paced")
        row = [broker, system]
        if b is None or b.error is not None:
            row += [f"failed: {b.error[:120]}" if b and b.error else "-", "", ""]
        else:
            stereo = _bridge_row(results, broker, BRIDGE_STEREO, "burst")
            ratio = (
                _ratio(stereo.deliveries_per_s, b.deliveries_per_s)
                if stereo is not None and stereo is not b and stereo.error is None
                else "-"
            )
            row += [f"{b.deliveries_per_s:,.0f}", ratio, _bridge_loss(b)]
        if p is None or p.error is not None:
            row += [f"failed: {p.error[:120]}" if p and p.error else "-", "", ""]
        else:
            row += [
                f"{_us(p.p50_us)} / {_us(p.p99_us)}",
                f"{_us(p.rtt_p50_us)} / {_us(p.rtt_p99_us)}",
                _bridge_loss(p),
            ]
        out.append(row)
    header = ["broker", "system", "deliveries/s", "stereo/peer", "burst delivered"]
    header += ["cross-hub p50 / p99 µs", "broker PING p50 / p99 µs", "paced delivered"]
    return table(header, out)


def bridge_targets_table(results: Results) -> str:
    """Per broker: stereo >= 5x the peer's deliveries/s, and no loss in any stereo run (the
    peer's loss is reported beside it, not held against a target: dropping is what it does)."""
    rows: list[list[str]] = []
    for broker in dict.fromkeys(r.broker for r in results.bridge):
        sb = _bridge_row(results, broker, BRIDGE_STEREO, "burst")
        peers = [
            r
            for r in results.bridge
            if r.broker == broker and r.system != BRIDGE_STEREO and r.mode == "burst"
        ]
        for pb in peers:
            usable = sb is not None and sb.ok and pb.error is None and pb.deliveries_per_s
            ratio = sb.deliveries_per_s / pb.deliveries_per_s if usable and sb and pb else None
            rows.append(
                [
                    f"{broker}: deliveries/s >= {BRIDGE_TARGET:g}x {pb.system}",
                    f"{ratio:.2f}x" if ratio is not None else "-",
                    "n.a." if ratio is None else ("PASS" if ratio >= BRIDGE_TARGET else "MISS"),
                ]
            )
        mine = [r for r in results.bridge if r.broker == broker and r.system == BRIDGE_STEREO]
        failed = [r for r in mine if r.error is not None]
        lossy = [f"{r.mode}: {_bridge_loss(r)}" for r in mine if r.error is None and not r.lossless]
        verdict = "n.a." if not mine or failed else ("MISS" if lossy else "PASS")
        rows.append(
            [
                f"{broker}: stereo delivers every message once, at every worker",
                "; ".join(lossy) or ("failed" if failed else "no loss") if mine else "-",
                verdict,
            ]
        )
        theirs = [
            f"{r.system} {r.mode}: {_bridge_loss(r)}"
            for r in results.bridge
            if r.broker == broker and r.system != BRIDGE_STEREO and r.error is None
        ]
        rows.append([f"{broker}: the peer's loss (reported)", "; ".join(theirs) or "-", "-"])
    return table(["target (bridge)", "measured", "verdict"], rows)


def pool_section(rows: list[PoolResult]) -> str:
    """The job pool table, with issue 14's targets checked against stereo's figures."""
    r0 = rows[0]
    lines = [
        f"### Job pool, {r0.processes} processes\n",
        f"Trivial jobs/s with {r0.callers} concurrent callers ({r0.jobs:,} jobs); one job at a"
        f" time, call to result (p50/p99); {r0.cpu_jobs:,} jobs of {r0.cpu_ms:g} ms of CPU each"
        f" with {r0.callers} callers, wall time against the ideal {r0.cpu_ideal_s:.2f} s.\n",
        "| system | jobs/s | p50 | p99 | CPU-bound wall | / ideal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.system} | failed: {r.error} | | | | |")
            continue
        lines.append(
            f"| {r.system} | {r.jobs_per_s:,.0f} | {r.p50_us:,.0f} µs | {r.p99_us:,.0f} µs"
            f" | {r.cpu_wall_s:.3f} s | {r.cpu_wall_s / r.cpu_ideal_s:.2f}x |"
        )
    ours = rows[0]
    if ours.error is None:
        peers = [r for r in rows[1:] if r.error is None and r.jobs_per_s]
        ratios = ", ".join(f"{ours.jobs_per_s / r.jobs_per_s:.1f}x {r.system}" for r in peers)
        lines.append(
            f"\nTargets: jobs/s >= 3x each peer (here {ratios}) and >= 45,000 (here"
            f" {ours.jobs_per_s:,.0f}); CPU-bound wall <= 1.1x ideal (here"
            f" {ours.cpu_wall_s / ours.cpu_ideal_s:.2f}x)."
        )
    return "\n".join(lines)


def render(results: Results) -> str:
    """Every table, as Markdown, with the loud notes first."""
    parts = []
    if results.skipped:
        parts.append(
            "**Notes on this run (skipped or disturbed):**\n\n"
            + "\n".join(f"- {s}" for s in results.skipped)
        )
    baseline = results.machine.get(BASELINE)
    if baseline is not None and BASELINE in _peers([*results.relay, *results.latency]):
        parts.append(
            f"**Baseline:** `{BASELINE}` is {baseline}, running the same app in turns with the"
            " other peers. Its ratios compare this checkout's stereo with it: > 1 means this"
            " checkout is faster (relay) or slower (latency)."
        )
    if results.relay:
        parts.append(
            "### Relay throughput\n\n"
            "Deliveries/s; in brackets stereo / peer (> 1: stereo faster).\n\n"
            + relay_table(results)
        )
        parts.append(
            "### CPU of the relaying process during the relay legs\n\n"
            "Share of a core, and CPU time per delivery (from the run's JSON; runs before issue 16"
            " have the share only).\n\n" + relay_cpu_table(results)
        )
        failures = [r for r in results.relay if r.error is not None or r.note is not None]
        if failures:
            parts.append(
                "Relay legs with notes:\n\n"
                + "\n".join(
                    f"- {r.peer} W={r.workers} {size(r.payload)}: {r.error or r.note}"
                    for r in failures
                )
            )
    if results.latency:
        r0 = results.latency[0]
        parts.append(
            f"### Latency, send to receipt ({r0.count} msgs at W={r0.workers}, one sender; "
            "stereo / peer > 1 = stereo slower)\n\n" + latency_table(results)
        )
    if results.floor:
        parts.append(
            "One hop on this machine, outside stereo: a process woken by 64 bytes on a socketpair"
            " answers them (half the round trip; a broadcast crosses two such hops):\n\n"
            + floor_table(results)
        )
    from .report_contended import contended_section  # it builds on this module's helpers

    if section := contended_section(results):
        parts.append(section)
    if results.serving:
        tool = next((r.tool for r in results.serving if r.tool), "")
        parts.append(f"### Shared-socket serving ({tool})\n\n" + serving_table(results))
    if results.costs is not None:
        parts.append("### Costs\n\n" + costs_table(results))
    if results.asgi:
        tool = "wrk -t1, keep-alive, 64 connections"
        parts.append(
            f'### ASGI "hello", one worker ({tool})\n\n'
            "stereo/server > 1: stereo serves more requests a second.\n\n"
            + asgi_http_table(results)
        )
    if results.fanout:
        f0 = results.fanout[0]
        paced = next((r for r in results.fanout if r.mode == "paced"), f0)
        parts.append(
            f"### WebSocket fan-out, {f0.workers} workers, {f0.receivers} receivers\n\n"
            f"One sender; {f0.count:,} messages at full speed (deliveries/s, CPU), then"
            f" {paced.count:,} paced (latency, send to receipt). Server CPU covers the master and"
            " workers, or uvicorn's processes plus redis-server's.\n\n" + fanout_table(results)
        )
    if results.asgi or results.fanout:
        parts.append("### ASGI targets\n\n" + asgi_targets_table(results))
    if results.pool:
        parts.append(pool_section(results.pool))
    if results.bridge:
        b0 = results.bridge[0]
        bpaced = next((r for r in results.bridge if r.mode == "paced"), b0)
        bburst = next((r for r in results.bridge if r.mode == "burst"), b0)
        parts.append(
            f"### Scale-out bridge, {b0.hubs} hubs x {b0.per_hub} workers, private broker\n\n"
            f"Every worker sends {bburst.count:,} messages of 64 B at full speed and receives"
            " everyone's (deliveries/s: distinct receipts over all workers / first start to last"
            f" receipt); then {bpaced.rate} msg/s over all senders ({bpaced.count:,} each) for the"
            " latency, send to receipt at a worker of the other hub, with the broker's PING round"
            " trip measured meanwhile. Loss is counted per sender and seq at every receiver.\n\n"
            + bridge_table(results)
            + "\n\n"
            + bridge_targets_table(results)
        )
    if results.metrics:
        from .metrics import metrics_table

        parts.append(
            "### A Prometheus scrape every second (`--metrics`)\n\n"
            "Relay deliveries/s, plain `stereo run` and `stereo run --metrics` scraped once a"
            " second, in turns.\n\n" + metrics_table(results.metrics)
        )
    if results.relay or results.latency or results.serving or results.costs:
        parts.append("### Targets\n\n" + targets_table(results))
    return "\n\n".join(parts) + "\n"
