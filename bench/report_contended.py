"""Issue 16's tables: the relay and latency legs quiet and contended side by side, against the
ZeroMQ proxy, with the relaying process's CPU per delivery, and the issue's targets.

Every ratio here is peer / zmq-proxy: above 1 is more deliveries a second (faster) in the
throughput columns, and more microseconds or more CPU (worse) in the latency and CPU columns.
"""

from __future__ import annotations

from collections.abc import Callable

from .report import find_row, rate, size, table
from .results import BATCHES, HopFloor, RelayResult, Results

ZMQ = "zmq-proxy"
STEREO = "stereo"


def _vs(mine: float | None, zmq: float | None, is_zmq: bool) -> str:
    if is_zmq or not mine or not zmq:
        return ""
    return f" ({mine / zmq:.2f}x)"


def _figure(
    r: RelayResult | None,
    zmq: RelayResult | None,
    value: Callable[[RelayResult], float | None],
    fmt: Callable[[float], str] = "{:,.0f}".format,
) -> str:
    """``value`` of a row and, in brackets, the row's over ZeroMQ's; "-" for a row or figure
    that is not there, "failed" and "(lossy)" for a leg that failed or lost messages."""
    if r is None:
        return "-"
    if r.error is not None:
        return "failed"
    x = value(r)
    if x is None:
        return "-"
    text = fmt(x)
    if r.deliveries < r.expected:
        return text + " (lossy)"
    theirs = value(zmq) if zmq is not None and zmq.ok else None
    return text + _vs(x, theirs, r is zmq)


def _rate(r: RelayResult) -> float:
    return r.rate


def _ns(r: RelayResult) -> float | None:
    return r.relay_ns_per_delivery


def _cores(r: RelayResult) -> float | None:
    return r.peer_cores


def _p50(r: RelayResult) -> float | None:
    return r.p50_us


def _p99(r: RelayResult) -> float | None:
    return r.p99_us


def contended_relay_table(results: Results) -> str:
    quiet, busy = results.relay, results.relay_contended
    out = []
    for w, p in dict.fromkeys((r.workers, r.payload) for r in busy):
        zq, zb = find_row(quiet, ZMQ, w, p), find_row(busy, ZMQ, w, p)
        here = [r for r in (*quiet, *busy) if (r.workers, r.payload) == (w, p)]
        for peer in dict.fromkeys(r.peer for r in here):
            q, b = find_row(quiet, peer, w, p), find_row(busy, peer, w, p)
            out.append(
                [
                    str(w),
                    size(p),
                    peer,
                    _figure(q, zq, _rate, rate),
                    _figure(b, zb, _rate, rate),
                    _figure(q, zq, _ns),
                    _figure(b, zb, _ns),
                    _figure(q, zq, _cores, "{:.2f}".format),
                    _figure(b, zb, _cores, "{:.2f}".format),
                ]
            )
    header = ["W", "payload", "peer", "deliveries/s quiet", "contended"]
    header += ["relaying process CPU ns/delivery quiet", "contended"]
    header += ["cores used by all its processes quiet", "contended"]
    return table(header, out)


def _p50_p99(r: RelayResult | None, zmq: RelayResult | None) -> str:
    if r is None:
        return "-"
    if r.error is not None or r.p50_us is None or r.p99_us is None:
        return "failed"
    text = f"{r.p50_us:,.0f} / {r.p99_us:,.0f}"
    if r.deliveries < r.expected:
        text += " (lossy)"
    if zmq is not None and zmq is not r and zmq.ok and zmq.p50_us and zmq.p99_us:
        text += f" ({r.p50_us / zmq.p50_us:.2f}x / {r.p99_us / zmq.p99_us:.2f}x)"
    return text


def contended_latency_table(results: Results) -> str:
    quiet, busy = results.latency, results.latency_contended
    zq = next((r for r in quiet if r.peer == ZMQ), None)
    zb = next((r for r in busy if r.peer == ZMQ), None)
    out = []
    for peer in dict.fromkeys(r.peer for r in (*quiet, *busy)):
        q = next((r for r in quiet if r.peer == peer), None)
        b = next((r for r in busy if r.peer == peer), None)
        out.append([peer, _p50_p99(q, zq), _p50_p99(b, zb)])
    return table(["peer", "p50 / p99 µs quiet", "contended"], out)


def contended_floor_table(results: Results) -> str:
    def cell(rows: list[HopFloor], echo: str) -> str:
        f = next((f for f in rows if f.echo == echo), None)
        return f"{f.p50_us:.0f} / {f.p99_us:.0f}" if f is not None else "-"

    echoes = dict.fromkeys(f.echo for f in (*results.floor, *results.floor_contended))
    rows = [[e, cell(results.floor, e), cell(results.floor_contended, e)] for e in echoes]
    return table(["echoing process", "hop p50 / p99 µs quiet", "contended"], rows)


def _at_most_1(x: float) -> bool:
    return x <= 1.0


def issue16_targets_table(results: Results) -> str:
    """Issue 16's targets at W = 4 / 64 B, each PASS / MISS / n.a. from this run's figures."""
    out: list[list[str]] = []

    def check(name: str, ratio: float | None, ok: Callable[[float], bool]) -> None:
        if ratio is None:
            out.append([name, "-", "n.a."])
        else:
            out.append([name, f"{ratio:.2f}x", "PASS" if ok(ratio) else "MISS"])

    def over_zmq(
        rows: list[RelayResult], peer: str, value: Callable[[RelayResult], float | None]
    ) -> float | None:
        mine, theirs = find_row(rows, peer, 4, 64), find_row(rows, ZMQ, 4, 64)
        if mine is None or theirs is None or not mine.ok or not theirs.ok:
            return None
        a, b = value(mine), value(theirs)
        return a / b if a and b else None

    for label, rows in (("quiet", results.latency), ("contended", results.latency_contended)):
        for key, value in (("p50", _p50), ("p99", _p99)):
            check(f"latency {key} {label} <= ZeroMQ's", over_zmq(rows, STEREO, value), _at_most_1)
    check(
        "relay `async for msg` quiet >= 1.2x ZeroMQ",
        over_zmq(results.relay, STEREO, _rate),
        lambda x: x >= 1.2,
    )
    check(
        "relay `async for msg` contended >= 1.0x ZeroMQ",
        over_zmq(results.relay_contended, STEREO, _rate),
        lambda x: x >= 1.0,
    )
    check(
        "relay `batches()` quiet >= 1.5x ZeroMQ",
        over_zmq(results.relay, BATCHES, _rate),
        lambda x: x >= 1.5,
    )
    for label, rows in (("quiet", results.relay), ("contended", results.relay_contended)):
        check(
            f"master CPU per delivery {label} < ZeroMQ proxy's",
            over_zmq(rows, STEREO, _ns),
            lambda x: x < 1.0,
        )
    return table(["target (issue 16), W = 4 / 64 B", "stereo / ZeroMQ", "verdict"], out)


def contended_section(results: Results) -> str:
    """The whole section, or nothing when neither a contended leg nor ``stereo-batches`` ran
    (the runs from before issue 16)."""
    batches = any(r.peer == BATCHES for r in results.relay)
    if not (results.relay_contended or results.latency_contended or batches):
        return ""
    parts = [
        "### Quiet and contended (two busy loops on the cores)\n\n"
        "In brackets each figure over the ZeroMQ proxy's in the same condition: > 1 is faster"
        " for deliveries/s, slower (or more CPU) for latency and CPU per delivery. The"
        " relaying process is stereo's master, the ZeroMQ proxy's process, redis-server or"
        " Node's cluster primary; its CPU covers the workers' timed window. The cores are the"
        " CPU all of a peer's processes got over that window (workers, relaying process and"
        " their threads), out of the machine's; with two busy loops they show how much of the"
        " machine each system's threads won from the scheduler."
    ]
    if results.relay_contended:
        parts.append(contended_relay_table(results))
    if results.latency_contended:
        r0 = results.latency_contended[0]
        parts.append(
            f"Latency, send to receipt ({r0.count} msgs at W={r0.workers}, one sender):\n\n"
            + contended_latency_table(results)
        )
    if results.floor_contended:
        parts.append("One hop on this machine (as above):\n\n" + contended_floor_table(results))
    parts.append(issue16_targets_table(results))
    return "\n\n".join(parts)
