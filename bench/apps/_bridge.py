"""What a worker of the bridge workload is asked to do, and the ledger it keeps of what it got.

Two hubs of W workers each share one broker. Every worker is a sender and a receiver; a sender is
named ``hub * 100 + worker`` (stereo numbers workers per hub, so worker ids alone collide across
hubs). Messages are ``["r", sender]`` (ready, for the start barrier) and
``["d", sent_ns, sender, seq, payload]`` (data): with the sender's own consecutive ``seq``, every
receiver can tell a message it never got (a gap) from one it got twice (a duplicate) and from one
that overtook an earlier one of the same sender (reordered), per sender, without trusting counts.

Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is system-wide on Linux, so a receiver
subtracts a sender's stamp from its own clock (same host only, which is the point of the leg).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ._spec import emit

BRIDGE_SPEC_ENV = "STEREO_BENCH_BRIDGE_SPEC"
HUB_ENV = "STEREO_BENCH_HUB"  # 1 or 2: the hub a worker (or its master) belongs to

BridgeMode = Literal["burst", "paced"]


@dataclass(frozen=True)
class BridgeSpec:
    mode: BridgeMode
    hubs: int
    per_hub: int  # workers per hub
    count: int  # messages each worker sends
    payload: int
    rate: int  # paced only: messages a second, over all senders together
    out_dir: str
    timeout: float  # seconds after the start at which a worker gives up and reports
    url: str  # the broker (the peer's pub/sub server)
    channel: str  # the peer's pub/sub channel

    @classmethod
    def from_env(cls) -> BridgeSpec:
        return cls(**json.loads(os.environ[BRIDGE_SPEC_ENV]))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def senders(self) -> list[int]:
        return [
            sender_id(h, w) for h in range(1, self.hubs + 1) for w in range(1, self.per_hub + 1)
        ]

    def start_offset_s(self, sender: int) -> float:
        """Paced senders start staggered, so the total rate is even, not four sends at once."""
        return self.senders.index(sender) * self.interval_s / len(self.senders)

    @property
    def interval_s(self) -> float:
        """Paced: the time between two sends of one sender (``rate`` is over all of them)."""
        return len(self.senders) / max(self.rate, 1)


def sender_id(hub: int, worker: int) -> int:
    return hub * 100 + worker


def hub_of(sender: int) -> int:
    return sender // 100


class Ledger:
    """One receiver's account: per sender, which seqs arrived (a bytearray of counts), and in
    paced mode the delay of every message from the other hub (the cross-hub latency)."""

    def __init__(self, spec: BridgeSpec, me: int) -> None:
        self.spec = spec
        self.me = me
        self.count = spec.count
        self.seen = {s: bytearray(spec.count) for s in spec.senders}
        self.last = dict.fromkeys(spec.senders, -1)
        self.expected = spec.count * len(spec.senders)
        self.distinct = 0
        self.duplicates = 0
        self.reordered = 0
        self.foreign = 0  # data that names no sender of this run, or a seq out of range
        self.start_ns = 0
        self.last_ns = 0
        self.latencies: list[int] = []
        self._keep_latency = spec.mode == "paced"

    @property
    def complete(self) -> bool:
        return self.distinct >= self.expected

    @property
    def deadline_ns(self) -> int:
        return self.start_ns + int(self.spec.timeout * 1e9)

    def start(self) -> None:
        self.start_ns = time.monotonic_ns()
        emit("go", id=self.me)

    def receive(self, value: Sequence[Any], now_ns: int) -> bool:
        """Account for one data message; True once every sender's every seq is in."""
        _, sent_ns, sender, seq = value[0], value[1], value[2], value[3]
        marks = self.seen.get(sender)
        if marks is None or not 0 <= seq < self.count:
            self.foreign += 1
            return self.complete
        self.last_ns = now_ns
        if marks[seq]:
            self.duplicates += 1
            return self.complete
        marks[seq] = 1
        self.distinct += 1
        if seq < self.last[sender]:
            self.reordered += 1
        else:
            self.last[sender] = seq
        if self._keep_latency and hub_of(sender) != hub_of(self.me):
            self.latencies.append(now_ns - sent_ns)
        return self.distinct >= self.expected

    def missing(self) -> dict[int, int]:
        """Seqs never received, per sender (only those that lack any)."""
        gaps = {s: self.count - sum(marks) for s, marks in self.seen.items()}
        return {s: n for s, n in gaps.items() if n}

    def report(self, **extra: object) -> dict[str, Any]:
        return {
            "id": self.me,
            "start_ns": self.start_ns,
            "last_ns": self.last_ns,
            "expected": self.expected,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "missing": {str(s): n for s, n in self.missing().items()},
            "latencies_ns": self.latencies,
            **extra,
        }

    def finish(self, **extra: object) -> None:
        path = Path(self.spec.out_dir) / f"bridge-worker-{self.me}.json"
        path.write_text(json.dumps(self.report(**extra)))
        emit("done", id=self.me, received=self.distinct)
