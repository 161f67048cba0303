"""A ZeroMQ peer worker: PUB into the proxy's XSUB, SUB from its XPUB, cbor2 on the wire.

One thread interleaves sending a batch and draining what has arrived, which is how a pyzmq user
would send and receive at once without sharing a socket between threads.

PUB/SUB has no delivery guarantee until subscriptions have propagated (the "slow joiner"), so the
start barrier is in two steps: repeat ``["h", id]`` until hellos from all N workers came back
(then every publisher reaches the proxy and the proxy reaches us), then repeat ``["r", id]`` until
all N readies are in, and send one last ready, which now reaches everyone, before the data.
"""

from __future__ import annotations

import os
import time

import cbor2
import zmq

from ._spec import ID_ENV, Spec, Tally, data_message

BATCH = 64  # messages sent between two drains of the SUB socket
BARRIER_TICK_MS = 10


def main() -> None:
    spec = Spec.from_env()
    worker_id = int(os.environ[ID_ENV])
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub.connect(spec.endpoints["xsub"])
    sub.connect(spec.endpoints["xpub"])
    tally = Tally(spec, worker_id)
    _barrier(pub, sub, spec.workers, worker_id, tally)
    tally.start()
    if spec.mode == "relay":
        _relay(pub, sub, spec, tally)
    else:
        _latency(pub, sub, spec, tally)
    tally.finish()
    # Exit without lingering on unsent messages of a worker nobody waits for.
    ctx.destroy(linger=0)


def _barrier(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], n: int, me: int, tally: Tally) -> None:
    hellos: set[int] = set()
    readies: set[int] = set()
    while len(readies) < n:
        kind = "r" if len(hellos) == n else "h"
        pub.send(cbor2.dumps([kind, me]))
        if sub.poll(BARRIER_TICK_MS):
            while True:
                try:
                    value = cbor2.loads(sub.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if value[0] in ("h", "r"):
                    hellos.add(value[1])
                    if value[0] == "r":
                        readies.add(value[1])
                else:
                    # A faster worker may already be sending: its data counts.
                    tally.receive(value)
    pub.send(cbor2.dumps(["r", me]))


def _drain(sub: zmq.Socket[bytes], tally: Tally) -> bool:
    """Receive whatever is queued without blocking; True once the tally is complete."""
    loads = cbor2.loads
    while True:
        try:
            raw = sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return False
        if tally.receive(loads(raw)):
            return True


def _relay(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], spec: Spec, tally: Tally) -> None:
    payload = b"x" * spec.payload
    remaining = spec.sends(tally.worker_id)
    dumps = cbor2.dumps
    while remaining and not tally.complete:
        for _ in range(min(BATCH, remaining)):
            pub.send(dumps(data_message(payload)))
        remaining -= min(BATCH, remaining)
        if _drain(sub, tally):
            return
    _wait_rest(sub, tally)


def _latency(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], spec: Spec, tally: Tally) -> None:
    payload = b"x" * spec.payload
    n = spec.sends(tally.worker_id)
    start = time.monotonic_ns()
    for i in range(n):
        due = start + i * spec.interval_ns
        while (wait_ns := due - time.monotonic_ns()) > 0:
            if sub.poll(max(1, wait_ns // 1_000_000)) and _drain(sub, tally):
                return
        pub.send(cbor2.dumps(data_message(payload)))
        _drain(sub, tally)
    _wait_rest(sub, tally)


def _wait_rest(sub: zmq.Socket[bytes], tally: Tally) -> None:
    while not tally.complete:
        left_ms = (tally.deadline_ns - time.monotonic_ns()) // 1_000_000
        if left_ms <= 0 or not sub.poll(left_ms):
            return
        if _drain(sub, tally):
            return


if __name__ == "__main__":
    main()
