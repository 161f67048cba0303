"""PNG charts of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

# The backend is chosen before pyplot is imported, so no display is ever needed.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .plan import BASE_PAYLOAD, BASE_WORKERS
from .report import size
from .results import RelayResult, Results


def write_charts(results: Results, out: Path) -> list[Path]:
    written = []
    for name, draw in (
        ("relay_by_workers.png", _by_workers),
        ("relay_by_payload.png", _by_payload),
        ("latency.png", _latency),
        ("contended.png", _contended),
        ("serving.png", _serving),
        ("asgi.png", _asgi),
        ("bridge.png", _bridge),
    ):
        fig = draw(results)
        if fig is None:
            continue
        path = out / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def _by_workers(results: Results) -> Figure | None:
    rows = [r for r in results.relay if r.payload == BASE_PAYLOAD and r.ok]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in dict.fromkeys(r.peer for r in rows):
        mine = sorted((r.workers, r.rate) for r in rows if r.peer == peer)
        ax.plot([w for w, _ in mine], [x for _, x in mine], marker="o", label=peer)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers (W)")
    ax.set_ylabel("deliveries / s")
    ax.set_title(f"Relay throughput, {BASE_PAYLOAD} B payloads (every message to all W)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def _by_payload(results: Results) -> Figure | None:
    rows = [r for r in results.relay if r.workers == BASE_WORKERS and r.ok]
    if not rows:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for peer in dict.fromkeys(r.peer for r in rows):
        mine = sorted((r.payload, r.rate) for r in rows if r.peer == peer)
        xs = [p for p, _ in mine]
        left.plot(xs, [x for _, x in mine], marker="o", label=peer)
        right.plot(xs, [p * x / 2**20 for p, x in mine], marker="o", label=peer)
    for ax, label in ((left, "deliveries / s"), (right, "payload MiB / s delivered")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(
            sorted({r.payload for r in rows}), [size(p) for p in sorted({r.payload for r in rows})]
        )
        ax.set_xlabel("payload")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.suptitle(f"Relay throughput by payload, W = {BASE_WORKERS}")
    return fig


def _latency(results: Results) -> Figure | None:
    rows = [r for r in results.latency if r.p50_us is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.25
    for i, (label, key) in enumerate((("p50", "p50_us"), ("p99", "p99_us"), ("max", "max_us"))):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        ax.bar(xs, [getattr(r, key) for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [r.peer for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("send -> receipt, µs")
    r0 = rows[0]
    ax.set_title(f"Latency: one worker broadcasting to {r0.workers} ({r0.count} messages)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    return fig


def _paired_bars(
    ax: Axes, peers: list[str], quiet: list[float | None], busy: list[float | None]
) -> None:
    """Quiet and contended side by side per peer; a missing figure leaves a gap."""
    width = 0.38
    for i, (label, values) in enumerate((("quiet", quiet), ("two busy loops", busy))):
        xs = [j + (i - 0.5) * width for j in range(len(peers))]
        ax.bar(xs, [v or 0 for v in values], width, label=label)
    ax.set_xticks(range(len(peers)), peers, rotation=20, ha="right")
    ax.grid(True, axis="y", which="both", alpha=0.3)


def _contended(results: Results) -> Figure | None:
    """Issue 16's legs: W = 4 / 64 B relay rate and relay CPU per delivery, and latency p50 and
    p99, each peer quiet beside contended."""
    busy = [r for r in results.relay_contended if r.ok]
    lat = [r for r in results.latency_contended if r.ok]
    if not busy and not lat:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")

    def relay_rows(rows: list[RelayResult]) -> dict[str, RelayResult]:
        return {
            r.peer: r
            for r in rows
            if r.ok and (r.workers, r.payload) == (BASE_WORKERS, BASE_PAYLOAD)
        }

    quiet_relay, busy_relay = relay_rows(results.relay), relay_rows(busy)
    peers = list(busy_relay)
    panels: tuple[tuple[Callable[[RelayResult], float | None], str, str], ...] = (
        (lambda r: r.rate, "deliveries / s", f"Relay, W = {BASE_WORKERS}, {BASE_PAYLOAD} B"),
        (
            lambda r: r.relay_ns_per_delivery,
            "CPU ns per delivery",
            "The relaying process's CPU per delivery",
        ),
    )
    for ax, (value, ylabel, title) in zip(axes[:2], panels, strict=True):
        quiet = [value(quiet_relay[p]) if p in quiet_relay else None for p in peers]
        _paired_bars(ax, peers, quiet, [value(busy_relay[p]) for p in peers])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0].legend()
    # Node's primary spends tens of times what the others do: a log axis keeps them readable.
    axes[1].set_yscale("log")
    quiet_lat = {r.peer: r for r in results.latency if r.ok}
    busy_lat = {r.peer: r for r in lat}
    names = list(busy_lat)
    width = 0.2
    series = (
        ("p50 quiet", quiet_lat, "p50_us"),
        ("p50 busy loops", busy_lat, "p50_us"),
        ("p99 quiet", quiet_lat, "p99_us"),
        ("p99 busy loops", busy_lat, "p99_us"),
    )
    for i, (label, rows, key) in enumerate(series):
        xs = [j + (i - 1.5) * width for j in range(len(names))]
        values = [getattr(rows[n], key) if n in rows else 0 for n in names]
        axes[2].bar(xs, values, width, label=label)
    axes[2].set_xticks(range(len(names)), names, rotation=20, ha="right")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("send -> receipt, µs")
    axes[2].set_title("Latency at W = 4, one sender")
    axes[2].legend(fontsize="small")
    axes[2].grid(True, axis="y", which="both", alpha=0.3)
    return fig


def _serving(results: Results) -> Figure | None:
    rows = [r for r in results.serving if r.error is None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j, r in enumerate(rows):
        total = sum(r.requests.values()) or 1
        bottom = 0.0
        for k, v in sorted(r.requests.items()):
            part = r.rps * v / total
            ax.bar(j, part, 0.6, bottom=bottom, edgecolor="white")
            ax.text(j, bottom + part / 2, f"w{k}", ha="center", va="center", fontsize=8)
            bottom += part
    ax.set_xticks(range(len(rows)), [r.leg for r in rows])
    ax.set_ylabel("requests / s (split by the worker that served them)")
    ax.set_title(f"HTTP keep-alive serving, 64 connections ({rows[0].tool})")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _asgi(results: Results) -> Figure | None:
    """Req/s of each "hello" leg, the fan-out's deliveries/s and its paced latency."""
    http = [r for r in results.asgi if r.error is None]
    fanout = [r for r in results.fanout if r.error is None]
    if not http and not fanout:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8), layout="constrained")
    for ax, app in zip(axes[:2], ("raw ASGI", "FastAPI"), strict=True):
        rows = [r for r in http if r.app == app]
        ax.bar(range(len(rows)), [r.rps for r in rows], 0.6)
        ax.set_xticks(range(len(rows)), [r.server for r in rows], rotation=30, ha="right")
        ax.set_ylabel("requests / s")
        ax.set_title(f'{app} "hello", one worker')
    burst = [r for r in fanout if r.mode == "burst"]
    axes[2].bar(range(len(burst)), [r.rate for r in burst], 0.6)
    axes[2].set_xticks(range(len(burst)), [r.server for r in burst], rotation=30, ha="right")
    axes[2].set_ylabel("deliveries / s")
    axes[2].set_title("WebSocket fan-out, full speed")
    paced = [r for r in fanout if r.mode == "paced" and r.p50_us is not None]
    width = 0.35
    for i, (label, key) in enumerate((("p50", "p50_us"), ("p99", "p99_us"))):
        xs = [j + (i - 0.5) * width for j in range(len(paced))]
        axes[3].bar(xs, [getattr(r, key) for r in paced], width, label=label)
    axes[3].set_xticks(range(len(paced)), [r.server for r in paced], rotation=30, ha="right")
    # Linear from 0, headroom above the tallest bar for the legend: the bars compare directly.
    tallest = max((r.p99_us or 0 for r in paced), default=1)
    axes[3].set_ylim(0, tallest * 1.25)
    axes[3].set_ylabel("send -> receipt, µs")
    axes[3].set_title(f"Fan-out latency at {results.plan.get('fanout_rate', '?')} msg/s")
    axes[3].legend(loc="upper left", ncols=2)
    for ax in axes:
        ax.grid(True, axis="y", alpha=0.3)
    return fig


def _bridge(results: Results) -> Figure | None:
    """Deliveries/s across two hubs, and cross-hub latency beside the broker's own PING."""
    rows = [r for r in results.bridge if r.error is None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    burst = [r for r in rows if r.mode == "burst"]
    labels = [f"{r.system}\n({r.broker})" for r in burst]
    axes[0].bar(range(len(burst)), [r.deliveries_per_s for r in burst], 0.6)
    for i, r in enumerate(burst):
        if not r.lossless:  # a lossy bar must not pass for a fast one
            axes[0].annotate(f"{r.missing:,} lost", (i, r.deliveries_per_s), ha="center")
    axes[0].set_xticks(range(len(burst)), labels)
    axes[0].set_ylabel("deliveries / s")
    axes[0].set_title("Two hubs x 2 workers, 64 B, full speed")
    paced = [r for r in rows if r.mode == "paced" and r.p50_us is not None]
    width = 0.2
    series = (
        ("cross-hub p50", "p50_us"),
        ("cross-hub p99", "p99_us"),
        ("broker PING p50", "rtt_p50_us"),
        ("broker PING p99", "rtt_p99_us"),
    )
    for i, (label, key) in enumerate(series):
        xs = [j + (i - 1.5) * width for j in range(len(paced))]
        axes[1].bar(xs, [getattr(r, key) or 0 for r in paced], width, label=label)
    axes[1].set_xticks(range(len(paced)), [f"{r.system}\n({r.broker})" for r in paced])
    # Log scale: a broker round trip of tens of µs and a p99 of milliseconds on one axis.
    axes[1].set_yscale("log")
    tallest = max((getattr(r, k) or 1 for r in paced for _, k in series), default=1)
    axes[1].set_ylim(top=tallest * 20)  # room above the bars for the legend
    axes[1].set_ylabel("µs")
    rate = paced[0].rate if paced else "?"
    axes[1].set_title(f"Latency at {rate} msg/s (send -> receipt at the other hub)")
    axes[1].legend(loc="upper left", fontsize="small")
    for ax in axes:
        ax.grid(True, axis="y", alpha=0.3)
    return fig
