"""How much of each workload a run does: the full suite of issue 5, or a short smoke run.

Every relay leg at 64 B broadcasts 100,000 messages in all, 100,000 / W per worker: 25,000 each
at W = 4 as issue 5 asks; at W = 1 and 2 more per worker, so a leg lasts long enough that start-up
(about 0.2 s) does not dominate; at W = 8 and 16 fewer, so a leg makes 1.6 M deliveries at W = 16
rather than 6.4 M. Big payloads send about 64 MiB per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
BASE_WORKERS = 4
BASE_PAYLOAD = 64
BASE_COUNT = 25_000


@dataclass(frozen=True)
class RelayCase:
    workers: int
    payload: int
    count: int  # messages each worker sends


@dataclass(frozen=True)
class Plan:
    relay: tuple[RelayCase, ...]
    # The relay legs also run with busy loops on the cores (issue 16: W = 4 / 64 B)
    contended_relay: tuple[RelayCase, ...]
    latency_workers: int
    latency_rate: int
    latency_seconds: int
    # (workers, --reuse-port) per serving leg; 0 workers is the plain trio process
    serving_legs: tuple[tuple[int, bool], ...]
    serving_connections: int
    serving_seconds: float
    idle_seconds: float
    kills: int
    # asgi: wrk's connections and seconds per HTTP leg (after an unrecorded warm-up), and the
    # WebSocket fan-out's messages at full speed, then at a fixed rate for some seconds
    asgi_connections: int
    asgi_seconds: int  # wrk takes whole seconds
    asgi_warmup: int
    fanout_workers: int
    fanout_receivers: int
    fanout_count: int
    fanout_rate: int
    fanout_seconds: int
    fanout_timeout: float
    # bridge: two hubs of bridge_per_hub workers over a private broker, each worker sending
    # bridge_count messages at full speed, then bridge_rate msg/s (over all) for some seconds
    bridge_per_hub: int
    bridge_count: int
    bridge_rate: int
    bridge_seconds: int
    bridge_timeout: float

    @property
    def fanout_paced_count(self) -> int:
        return self.fanout_rate * self.fanout_seconds

    @property
    def latency_count(self) -> int:
        return self.latency_rate * self.latency_seconds


def _count(workers: int, payload: int, base: int, budget: int) -> int:
    by_workers = base * BASE_WORKERS // workers
    by_bytes = max(4, budget // payload)
    return min(by_workers, by_bytes)


def _cases(
    workers: tuple[int, ...], payloads: tuple[int, ...], base: int, budget: int
) -> tuple[RelayCase, ...]:
    """The W sweep at 64 B, then the payload sweep at W = 4; budget caps bytes per sender."""
    cases = [RelayCase(w, BASE_PAYLOAD, _count(w, BASE_PAYLOAD, base, budget)) for w in workers]
    cases += [
        RelayCase(BASE_WORKERS, p, _count(BASE_WORKERS, p, base, budget))
        for p in payloads
        if p != BASE_PAYLOAD
    ]
    return tuple(cases)


def _base(cases: tuple[RelayCase, ...]) -> tuple[RelayCase, ...]:
    return tuple(c for c in cases if (c.workers, c.payload) == (BASE_WORKERS, BASE_PAYLOAD))


FULL_RELAY = _cases((1, 2, 4, 8, 16), (KiB, 64 * KiB, MiB), BASE_COUNT, 64 * MiB)
QUICK_RELAY = _cases((1, 4), (KiB, MiB), 2_000, 8 * MiB)

FULL = Plan(
    relay=FULL_RELAY,
    contended_relay=_base(FULL_RELAY),
    latency_workers=4,
    latency_rate=500,
    latency_seconds=5,
    serving_legs=((0, False), (1, False), (2, False), (2, True)),
    serving_connections=64,
    serving_seconds=10,
    idle_seconds=10,
    kills=8,
    asgi_connections=64,
    asgi_seconds=5,
    asgi_warmup=1,
    fanout_workers=4,
    fanout_receivers=8,
    fanout_count=20_000,
    fanout_rate=500,
    fanout_seconds=5,
    fanout_timeout=60,
    bridge_per_hub=2,
    bridge_count=25_000,
    bridge_rate=500,
    bridge_seconds=5,
    bridge_timeout=120,
)

QUICK = Plan(
    relay=QUICK_RELAY,
    contended_relay=_base(QUICK_RELAY),
    latency_workers=4,
    latency_rate=500,
    latency_seconds=1,
    serving_legs=((0, False), (1, False), (2, False), (2, True)),
    serving_connections=64,
    serving_seconds=2,
    idle_seconds=2,
    kills=2,
    asgi_connections=64,
    asgi_seconds=1,
    asgi_warmup=1,
    fanout_workers=4,
    fanout_receivers=8,
    fanout_count=1_000,
    fanout_rate=500,
    fanout_seconds=1,
    fanout_timeout=30,
    bridge_per_hub=2,
    bridge_count=2_000,
    bridge_rate=500,
    bridge_seconds=1,
    bridge_timeout=30,
)
