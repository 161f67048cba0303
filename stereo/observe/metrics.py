"""The Prometheus series of a master, built at scrape time from one snapshot (pure apart from
prometheus_client's own ProcessCollector, which reads the master's /proc entry).

A custom collector over a snapshot, not metric objects updated as things happen: the master
counts what it counts anyway, and nothing here touches its relay. Counters follow Prometheus'
rules: per-process figures (CPU seconds) reset when a slot's process is replaced, which
``rate()`` reads as a counter reset; per-slot and hub totals are the master's and never go back.
Names and labels: docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..snapshot import MESSAGE_SIZE_BUCKETS
from .model import Figures, current, slots, state_counts


def _worker_families(snapshot: Mapping[str, Any], figures: Mapping[int, Figures]) -> list[Metric]:
    up = GaugeMetricFamily(
        "stereo_worker_up", "1 while the slot's current process is ready", labels=["slot"]
    )
    restarts = CounterMetricFamily(
        "stereo_worker_restarts",
        "Processes of the slot replaced, by why (docs/observability.md)",
        labels=["slot", "reason"],
    )
    cpu = CounterMetricFamily(
        "stereo_worker_cpu_seconds",
        "CPU time of the slot's current process (resets when it is replaced)",
        labels=["slot"],
    )
    rss = GaugeMetricFamily(
        "stereo_worker_resident_memory_bytes",
        "Resident memory of the slot's current process",
        labels=["slot"],
    )
    outbox = GaugeMetricFamily(
        "stereo_worker_outbox_bytes",
        "Bytes the master holds for the slot's current process, not yet written",
        labels=["slot"],
    )
    cutoffs = CounterMetricFamily(
        "stereo_worker_cutoffs",
        "Times the hub cut the slot's process off (slow consumer, protocol error)",
        labels=["slot"],
    )
    cut_by_slot = dict(snapshot["hub"]["cutoffs_by_slot"])
    for slot in slots(snapshot):
        label = str(slot["id"])
        proc = current(slot)
        up.add_metric([label], 1 if proc is not None and proc["state"] == "ready" else 0)
        for reason, count in slot["restart_reasons"]:
            restarts.add_metric([label, reason], count)
        cutoffs.add_metric([label], cut_by_slot.get(slot["id"], 0))
        if proc is None:
            continue
        outbox.add_metric([label], proc["hub"]["outbox_bytes"])
        seen = figures.get(proc["pid"])
        if seen is not None:
            cpu.add_metric([label], seen.cpu_seconds)
            rss.add_metric([label], seen.rss)
    workers = GaugeMetricFamily(
        "stereo_workers", "Worker processes (and idle slots) by lifecycle state", labels=["state"]
    )
    for state, count in state_counts(snapshot).items():
        workers.add_metric([state], count)
    return [workers, up, restarts, cpu, rss, outbox, cutoffs]


def _hub_families(hub: Mapping[str, Any]) -> list[Metric]:
    counted = [
        CounterMetricFamily("stereo_hub_broadcasts", "Broadcasts relayed", value=hub["broadcasts"]),
        CounterMetricFamily(
            "stereo_hub_deliveries",
            "Broadcasts written to worker outboxes (broadcasts x receivers)",
            value=hub["deliveries"],
        ),
    ]
    traffic = CounterMetricFamily(
        "stereo_hub_bytes", "Bytes through the hub's worker connections", labels=["direction"]
    )
    traffic.add_metric(["in"], hub["bytes_in"])
    traffic.add_metric(["out"], hub["bytes_out"])
    counts = list(accumulate(hub["size_buckets"])) or [0] * (len(MESSAGE_SIZE_BUCKETS) + 1)
    bounds = [str(float(b)) for b in MESSAGE_SIZE_BUCKETS] + ["+Inf"]
    sizes = HistogramMetricFamily(
        "stereo_hub_message_size_bytes",
        "Relayed broadcast frames by size (a batch's frames by their mean size)",
        buckets=list(zip(bounds, counts, strict=True)),
        sum_value=hub["relayed_bytes"],
    )
    peers = GaugeMetricFamily("stereo_hub_peers", "Worker connections", value=hub["peers"])
    return [*counted, traffic, sizes, peers]


def _bridge_families(bridge: Mapping[str, Any]) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "stereo_bridge_connected",
            "1 while a bridge process is attached",
            value=1 if bridge["connected"] else 0,
        ),
        GaugeMetricFamily(
            "stereo_bridge_pending_bytes",
            "Bytes handed to the bridge, not yet appended by the broker",
            value=bridge["pending_bytes"],
        ),
        CounterMetricFamily(
            "stereo_bridge_restarts",
            "Bridge processes started after the first",
            value=bridge["restarts"],
        ),
        CounterMetricFamily(
            "stereo_bridge_resets",
            "Times the bridge cut this hub's workers off",
            value=bridge["resets"],
        ),
    ]


class SnapshotCollector(Collector):
    """Every stereo_* series of one snapshot."""

    def __init__(self, snapshot: Mapping[str, Any], figures: Mapping[int, Figures]) -> None:
        self.snapshot = snapshot
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        hub = self.snapshot["hub"]
        families = _worker_families(self.snapshot, self.figures) + _hub_families(hub)
        if hub.get("bridge") is not None:
            families += _bridge_families(hub["bridge"])
        return families


def exposition(
    snapshot: Mapping[str, Any], figures: Mapping[int, Figures], accept: str
) -> tuple[bytes, str]:
    """The /metrics body and its content type: OpenMetrics when ``accept`` asks for it, else
    the Prometheus text format. With the master's own process_* series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, figures))
    master_pid = int(snapshot["pid"])
    ProcessCollector(pid=lambda: master_pid, registry=registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
