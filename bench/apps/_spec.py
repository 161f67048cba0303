"""What a relay or latency worker is asked to do, and how it reports back.

The harness puts a :class:`Spec` as JSON in ``STEREO_BENCH_SPEC``; every peer's worker (the stereo
app, the ZeroMQ and Redis workers, and node_cluster.js, which mirrors this file by hand) reads it,
counts data messages with a :class:`Tally` and writes one JSON result file. Progress goes to
stdout as ``@bench EVENT key=value ...`` lines, which the harness waits on (stereo's master
forwards them with a ``[worker N]`` prefix, which the harness's pattern ignores).

Messages are the same logical value everywhere: ``["r", id]`` (ready, for the start barrier) and
``["d", sent_ns, payload]`` (data). Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is
system-wide on Linux, so a send time taken in one process compares with a receipt time in another
(Node's ``process.hrtime`` reads the same clock).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SPEC_ENV = "STEREO_BENCH_SPEC"
ID_ENV = "STEREO_BENCH_ID"  # set by the harness for peers that have no worker ids of their own
# The asgi workload's fan-out apps: the run's channel, and stereo's subscriber limit for the leg.
CHANNEL_ENV = "STEREO_BENCH_CHANNEL"
SUBSCRIBER_LIMIT_ENV = "STEREO_BENCH_SUBSCRIBER_LIMIT"

Mode = Literal["relay", "latency"]


@dataclass(frozen=True)
class Spec:
    mode: Mode
    workers: int
    count: int  # relay: messages each worker sends; latency: messages worker 1 sends
    payload: int  # bytes of payload per message
    rate: int  # latency only: messages per second
    out_dir: str
    timeout: float  # seconds after the start at which a worker gives up and reports what it got
    endpoints: dict[str, str] = field(default_factory=dict)  # peer-specific addresses

    @classmethod
    def from_env(cls) -> Spec:
        return cls(**json.loads(os.environ[SPEC_ENV]))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def expected(self) -> int:
        """Data messages each worker must receive, its own included."""
        return self.workers * self.count if self.mode == "relay" else self.count

    def sends(self, worker_id: int) -> int:
        if self.mode == "relay":
            return self.count
        return self.count if worker_id == 1 else 0

    @property
    def interval_ns(self) -> int:
        return 1_000_000_000 // max(self.rate, 1)


def emit(event: str, **fields: object) -> None:
    """One progress line for the harness; flushed, since stdout is a pipe."""
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    sys.stdout.write(f"@bench {event}{extra}\n")
    sys.stdout.flush()


def data_message(payload: bytes) -> list[Any]:
    return ["d", time.monotonic_ns(), payload]


class Tally:
    """Counts one worker's data receipts; keeps every latency in latency mode only.

    Relay mode keeps no per-message latency: appending to a list a million times would cost the
    peers' workers as much as some of what is being measured.
    """

    def __init__(self, spec: Spec, worker_id: int) -> None:
        self.spec = spec
        self.worker_id = worker_id
        self.expected = spec.expected
        self.received = 0
        self.start_ns = 0
        self.last_ns = 0
        self.latencies: list[int] = []
        self._keep_latency = spec.mode == "latency"

    @property
    def complete(self) -> bool:
        return self.received >= self.expected

    @property
    def deadline_ns(self) -> int:
        return self.start_ns + int(self.spec.timeout * 1e9)

    def start(self) -> None:
        self.start_ns = time.monotonic_ns()
        emit("go", id=self.worker_id)

    def receive(self, value: Any) -> bool:
        """Count one decoded message if it is data; True once every expected message is in."""
        if value[0] != "d":
            return False
        now = time.monotonic_ns()
        self.received += 1
        self.last_ns = now
        if self._keep_latency:
            self.latencies.append(now - value[1])
        return self.received >= self.expected

    def finish(self) -> None:
        result = {
            "id": self.worker_id,
            "start_ns": self.start_ns,
            "last_ns": self.last_ns,
            "received": self.received,
            "expected": self.expected,
            "latencies_ns": self.latencies,
        }
        path = Path(self.spec.out_dir) / f"worker-{self.worker_id}.json"
        path.write_text(json.dumps(result))
        emit("done", id=self.worker_id, received=self.received)
