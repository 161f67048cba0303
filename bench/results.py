"""The suite's results as plain dataclasses, saved as one JSON file.

Every figure the table, the charts and docs/benchmarks.md show comes from here, so a run can be
re-rendered from its JSON without being repeated (``--from-json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# The peer name of ``--baseline``: another stereo installation, compared with this checkout's.
BASELINE = "stereo-baseline"
# The peer of stereo whose workers read with the batch API (``messages().batches()``).
BATCHES = "stereo-batches"


@dataclass
class RelayResult:
    peer: str
    mode: str  # "relay" or "latency"
    workers: int
    payload: int
    count: int  # messages per sender
    expected: int  # deliveries a loss-free run makes
    deliveries: int = 0
    wall_s: float = 0.0
    relay_cpu_pct: float | None = None  # CPU of the relaying process while the leg ran
    relay_cpu_s: float | None = None  # the same, in CPU seconds over that window
    peer_cpu_s: float | None = None  # every process of the leg, over the same window
    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    error: str | None = None
    note: str | None = None

    @property
    def rate(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.deliveries == self.expected

    @property
    def peer_cores(self) -> float | None:
        """The CPU all of the leg's processes got, in cores (CPU seconds per second)."""
        if self.peer_cpu_s is None or self.wall_s <= 0:
            return None
        return self.peer_cpu_s / self.wall_s

    @property
    def relay_ns_per_delivery(self) -> float | None:
        """The relaying process's CPU per delivery (its sending and receiving both count)."""
        if self.relay_cpu_s is None or not self.deliveries:
            return None
        return 1e9 * self.relay_cpu_s / self.deliveries


@dataclass
class MetricsResult:
    """The relay with and without a scrape every second (bench/metrics.py), deliveries/s."""

    workers: int
    payload: int
    count: int
    plain_rates: list[float]
    scraped_rates: list[float]
    plain_cpu_pct: float | None
    scraped_cpu_pct: float | None
    scrapes: list[int]  # answered scrapes during each scraped leg
    errors: list[str | None] = field(default_factory=list)


@dataclass
class HopFloor:
    """One hop (a process woken by a message) on this machine, outside stereo (floor.py)."""

    echo: str  # "blocking" or "trio": how the echoing process reads and answers
    p50_us: float
    p99_us: float


@dataclass
class ServingResult:
    leg: str  # "plain trio", "stereo -w 1", ...
    workers: int
    tool: str
    rps: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)  # per worker id
    errors: str | None = None  # socket errors reported by the load generator
    error: str | None = None
    seconds: float = 0.0  # how long the load ran
    server_cpu_s: float = 0.0  # the server's processes (master and workers), over the load
    load_cpu_s: float = 0.0  # the load generator's, over the same run

    def core_share(self, cpu_s: float) -> float:
        """CPU seconds over the run as a share of one core (1.0 = one core kept busy)."""
        return cpu_s / self.seconds if self.seconds else 0.0

    @property
    def imbalance(self) -> float | None:
        """Busiest worker's requests over the idlest's (1.0 is perfect balance)."""
        counts = list(self.requests.values())
        if len(counts) < 2 or min(counts) == 0:
            return None if len(counts) < 2 else float("inf")
        return max(counts) / min(counts)


@dataclass
class AsgiHttpResult:
    """One server serving one "hello" app with one worker, driven by wrk (bench/asgi.py)."""

    app: str  # "raw ASGI" or "FastAPI"
    server: str  # "stereo", "uvicorn httptools+uvloop", "hypercorn trio", ...
    rps: float = 0.0
    requests: int = 0
    seconds: float = 0.0
    p50_us: float | None = None
    p99_us: float | None = None
    server_cpu_s: float = 0.0  # the server's process tree over the measured run
    load_cpu_s: float = 0.0  # wrk's
    errors: str | None = None  # wrk's socket error and non-2xx lines
    error: str | None = None  # the leg failed (no figures, or answers that were not 200)

    @property
    def cpu_per_request_us(self) -> float | None:
        return 1e6 * self.server_cpu_s / self.requests if self.requests else None


@dataclass
class FanoutResult:
    """One WebSocket fan-out run: ``burst`` (full speed) or ``paced`` (fixed rate)."""

    server: str  # "stereo" or "uvicorn + broadcaster"
    mode: str
    workers: int
    receivers: int
    count: int  # messages sent
    deliveries: int = 0  # distinct messages received, summed over the receivers
    duplicates: int = 0
    wall_s: float = 0.0  # first send to last receipt
    server_cpu_s: float = 0.0  # master and workers (stereo), or uvicorn's processes
    broker_cpu_s: float | None = None  # redis-server's, for the broadcaster peer
    load_cpu_s: float = 0.0  # the load generator's own, over the same span
    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    spread: dict[str, int] = field(default_factory=dict)  # receivers per server pid
    connections: int = 0  # receiver connections opened to reach that spread
    error: str | None = None

    @property
    def expected(self) -> int:
        return self.count * self.receivers

    @property
    def lost(self) -> int:
        return self.expected - self.deliveries

    @property
    def rate(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_delivery_us(self) -> float | None:
        total = self.server_cpu_s + (self.broker_cpu_s or 0.0)
        return 1e6 * total / self.deliveries if self.deliveries else None

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.duplicates == 0


@dataclass
class PoolResult:
    """One round of the job pool workload for one system (bench/pool.py)."""

    system: str
    processes: int
    callers: int  # concurrent callers in the throughput and CPU legs
    jobs: int  # trivial jobs in the throughput leg
    cpu_jobs: int
    cpu_ms: float  # CPU per CPU-bound job
    jobs_per_s: float = 0.0
    p50_us: float = 0.0  # one job at a time, call to result
    p99_us: float = 0.0
    cpu_wall_s: float = 0.0  # all CPU-bound jobs, first call to last result
    # The same jobs in bare processes, measured in the same round (bench.pool_work.measure_floor)
    cpu_floor_s: float = 0.0
    cpu_others_s: float = 0.0  # CPU of the caller (and master) during the CPU-bound leg
    error: str | None = None

    @property
    def cpu_ideal_s(self) -> float:
        return self.cpu_jobs * self.cpu_ms / 1000 / self.processes


@dataclass
class BridgeResult:
    """One run of the bridge workload: two hubs of W workers sharing one private broker, every
    worker a sender and a receiver (bench/bridge.py). Loss is counted per sender and seq."""

    system: str  # "stereo" or the peer, "redis pub/sub"
    broker: str  # "redis" or "nats": the private server both systems used
    mode: str  # "burst" (full speed) or "paced" (``rate`` msg/s over all senders)
    hubs: int
    per_hub: int  # workers per hub
    count: int  # messages per sender
    rate: int = 0  # paced only
    deliveries: int = 0  # distinct (sender, seq) receipts, summed over the receivers
    missing: int = 0  # expected but never received (gaps), summed over the receivers
    duplicates: int = 0
    reordered: int = 0  # received after a later seq of the same sender
    reconnects: int = 0  # the peer's subscriptions Redis dropped (and it took again)
    wall_s: float = 0.0  # first start to last receipt (workers' CLOCK_MONOTONIC)
    p50_us: float | None = None  # paced: send to receipt at a worker of the other hub
    p99_us: float | None = None
    max_us: float | None = None
    rtt_p50_us: float | None = None  # paced: the broker's PING round trip, in the same span
    rtt_p99_us: float | None = None
    error: str | None = None
    note: str | None = None

    @property
    def senders(self) -> int:
        return self.hubs * self.per_hub

    @property
    def expected(self) -> int:
        return self.senders * self.senders * self.count

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def lossless(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.deliveries == self.expected

    @property
    def ok(self) -> bool:
        return self.error is None and self.lossless


@dataclass
class CostResult:
    idle_seconds: float = 0.0
    idle_cpu_pct: float | None = None
    master_rss_mb: float | None = None
    worker_rss_mb: float | None = None  # mean over the idle workers
    respawn_ms: list[float] = field(default_factory=list)
    bare_import_ms: float | None = None
    error: str | None = None
    note: str | None = None

    @property
    def respawn_median_ms(self) -> float | None:
        return median(self.respawn_ms) if self.respawn_ms else None

    @property
    def respawn_overhead_ms(self) -> float | None:
        m = self.respawn_median_ms
        if m is None or self.bare_import_ms is None:
            return None
        return m - self.bare_import_ms


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    relay: list[RelayResult] = field(default_factory=list)
    latency: list[RelayResult] = field(default_factory=list)
    # The same legs with busy loops on the cores (bench/contend.py), and the hop floor under them.
    relay_contended: list[RelayResult] = field(default_factory=list)
    latency_contended: list[RelayResult] = field(default_factory=list)
    floor_contended: list[HopFloor] = field(default_factory=list)
    serving: list[ServingResult] = field(default_factory=list)
    costs: CostResult | None = None
    floor: list[HopFloor] = field(default_factory=list)
    asgi: list[AsgiHttpResult] = field(default_factory=list)
    fanout: list[FanoutResult] = field(default_factory=list)
    bridge: list[BridgeResult] = field(default_factory=list)
    pool: list[PoolResult] = field(default_factory=list)
    metrics: list[MetricsResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # loud notes: what did not run, and why

    def save(self, path: Path) -> None:
        data = asdict(self)
        # Derived figures too, so readers of the JSON need not recompute them.
        for key in ("relay", "latency", "relay_contended", "latency_contended"):
            for row, obj in zip(data[key], getattr(self, key), strict=True):
                row["deliveries_per_s"] = obj.rate
                row["relay_ns_per_delivery"] = obj.relay_ns_per_delivery
        for row, b in zip(data["bridge"], self.bridge, strict=True):
            row["deliveries_per_s"] = b.deliveries_per_s
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())

        def rows(key: str) -> list[RelayResult]:
            derived = ("deliveries_per_s", "relay_ns_per_delivery")
            return [
                RelayResult(**{k: v for k, v in r.items() if k not in derived})
                for r in data.get(key, [])
            ]

        costs = data.get("costs")
        return cls(
            machine=data["machine"],
            plan=data["plan"],
            relay=rows("relay"),
            latency=rows("latency"),
            relay_contended=rows("relay_contended"),
            latency_contended=rows("latency_contended"),
            floor_contended=[HopFloor(**f) for f in data.get("floor_contended", [])],
            serving=[ServingResult(**r) for r in data["serving"]],
            costs=CostResult(**costs) if costs else None,
            floor=[HopFloor(**f) for f in data.get("floor", [])],
            asgi=[AsgiHttpResult(**r) for r in data.get("asgi", [])],
            fanout=[FanoutResult(**r) for r in data.get("fanout", [])],
            bridge=[
                BridgeResult(**{k: v for k, v in r.items() if k != "deliveries_per_s"})
                for r in data.get("bridge", [])
            ],
            pool=[PoolResult(**r) for r in data.get("pool", [])],
            metrics=[MetricsResult(**r) for r in data.get("metrics", [])],
            skipped=data["skipped"],
        )


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


Row = TypeVar("Row")


def median_round(rows: list[Row], key: Callable[[Row], float]) -> Row:
    """The round whose ``key`` is the median (its other figures come with it)."""
    return sorted(rows, key=key)[len(rows) // 2]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
