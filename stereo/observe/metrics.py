"""The Prometheus series of a master, built at scrape time from one snapshot (pure apart from
prometheus_client's own ProcessCollector, which reads the master's /proc entry).

A custom collector over a snapshot, not metric objects updated as things happen: the master
counts what it counts anyway, and nothing here touches its relay. Counters follow Prometheus'
rules: per-process figures (CPU seconds) reset when a slot's process is replaced, which
``rate()`` reads as a counter reset; per-slot and hub totals are the master's and never go back,
but for a job pool slot's jobs done: the pool processes' own counts, kept from going back across
the slot's processes by :class:`~.jobs.JobTotals` in this process. Every per-slot series has a
``role`` (worker, pool) and a ``pool`` label. Names and labels: docs/observability.md.
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
from .jobs import Key
from .model import Figures, current, pools, role, slots, state_counts

SLOT = ["slot", "role", "pool"]  # role: worker or pool; pool: the job pool's name, "" for workers


def _slot_labels(slot: Mapping[str, Any]) -> list[str]:
    return [str(slot["id"]), role(slot), slot.get("pool") or ""]


def _worker_families(snapshot: Mapping[str, Any], figures: Mapping[int, Figures]) -> list[Metric]:
    up = GaugeMetricFamily(
        "stereo_worker_up", "1 while the slot's current process is ready", labels=SLOT
    )
    restarts = CounterMetricFamily(
        "stereo_worker_restarts",
        "Processes of the slot replaced, by why (docs/observability.md)",
        labels=[*SLOT, "reason"],
    )
    cpu = CounterMetricFamily(
        "stereo_worker_cpu_seconds",
        "CPU time of the slot's current process (resets when it is replaced)",
        labels=SLOT,
    )
    rss = GaugeMetricFamily(
        "stereo_worker_resident_memory_bytes",
        "Resident memory of the slot's current process",
        labels=SLOT,
    )
    outbox = GaugeMetricFamily(
        "stereo_worker_outbox_bytes",
        "Bytes the master holds for the slot's current process, not yet written",
        labels=SLOT,
    )
    cutoffs = CounterMetricFamily(
        "stereo_worker_cutoffs",
        "Times the hub cut the slot's process off (slow consumer, protocol error)",
        labels=SLOT,
    )
    cut_by_slot = dict(snapshot["hub"]["cutoffs_by_slot"])
    for slot in slots(snapshot):
        labels = _slot_labels(slot)
        proc = current(slot)
        up.add_metric(labels, 1 if proc is not None and proc["state"] == "ready" else 0)
        for reason, count in slot["restart_reasons"]:
            restarts.add_metric([*labels, reason], count)
        cutoffs.add_metric(labels, cut_by_slot.get(slot["id"], 0))
        if proc is None:
            continue
        outbox.add_metric(labels, proc["hub"]["outbox_bytes"])
        seen = figures.get(proc["pid"])
        if seen is not None:
            cpu.add_metric(labels, seen.cpu_seconds)
            rss.add_metric(labels, seen.rss)
    workers = GaugeMetricFamily(
        "stereo_workers",
        "Processes (and idle slots) by lifecycle state, of the workers and of each job pool",
        labels=["role", "pool", "state"],
    )
    for group in [None, *pools(snapshot)]:
        for state, count in state_counts(snapshot, group).items():
            workers.add_metric(["worker" if group is None else "pool", group or "", state], count)
    return [workers, up, restarts, cpu, rss, outbox, cutoffs]


def _pool_families(snapshot: Mapping[str, Any], jobs_done: Mapping[Key, int]) -> list[Metric]:
    queued = GaugeMetricFamily(
        "stereo_pool_jobs_queued",
        "Jobs received by the slot's pool processes and not started, as they last reported",
        labels=["pool", "slot"],
    )
    done = CounterMetricFamily(
        "stereo_pool_jobs_done",
        "Jobs the slot's pool processes have done (kept across its processes)",
        labels=["pool", "slot"],
    )
    for slot in slots(snapshot):
        if slot.get("pool") is None:
            continue
        labels = [slot["pool"], str(slot["id"])]
        # a draining predecessor's queue is still to be run: counted with its successor's
        queued.add_metric(
            labels, sum((p.get("jobs") or {}).get("queued") or 0 for p in slot["processes"])
        )
        done.add_metric(labels, jobs_done.get((slot["pool"], slot["id"]), 0))
    return [queued, done]


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
    """Every stereo_* series of one snapshot; ``jobs_done`` is a JobTotals reading of it."""

    def __init__(
        self,
        snapshot: Mapping[str, Any],
        figures: Mapping[int, Figures],
        jobs_done: Mapping[Key, int],
    ) -> None:
        self.snapshot = snapshot
        self.figures = figures
        self.jobs_done = jobs_done

    def collect(self) -> Iterable[Metric]:
        hub = self.snapshot["hub"]
        families = _worker_families(self.snapshot, self.figures) + _hub_families(hub)
        if pools(self.snapshot):
            families += _pool_families(self.snapshot, self.jobs_done)
        if hub.get("bridge") is not None:
            families += _bridge_families(hub["bridge"])
        return families


def exposition(
    snapshot: Mapping[str, Any],
    figures: Mapping[int, Figures],
    accept: str,
    jobs_done: Mapping[Key, int] | None = None,
) -> tuple[bytes, str]:
    """The /metrics body and its content type: OpenMetrics when ``accept`` asks for it, else
    the Prometheus text format. With the master's own process_* series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, figures, jobs_done or {}))
    master_pid = int(snapshot["pid"])
    ProcessCollector(pid=lambda: master_pid, registry=registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
