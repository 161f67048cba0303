"""The peer of the bridge workload: the socket.io Redis-adapter design, without socket.io.

Every worker (a plain process; two "hubs" of W, which only label them) PUBLISHes each broadcast
as one message on one Redis pub/sub channel and SUBSCRIBEs to that channel, through redis-py
(synchronous, hiredis parser). PUBLISHes go through a non-transactional pipeline, 64 per round
trip, as the adapter's client writes without waiting for each reply; one message is still one
PUBLISH. Between batches the worker drains its subscription without blocking.

Nothing here recovers what pub/sub drops: a subscriber Redis disconnects (its output buffer past
``client-output-buffer-limit pubsub``, left at the server's default) resubscribes and carries on,
as the adapter does, and the ledger shows what went missing.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
import redis

from ._bridge import HUB_ENV, BridgeSpec, Ledger, sender_id
from ._spec import ID_ENV

BATCH = 64
PARTIAL_TIMEOUT = 10.0
IDLE = 5.0


class Subscriber:
    """One subscription that comes back (empty-handed) after Redis drops it."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.reconnects = 0
        self.pubsub = self._subscribe()

    def _subscribe(self) -> Any:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.channel)
        return pubsub

    def next(self, timeout: float) -> Any | None:
        """The next decoded message, or None. ``can_read`` waits (see redis_worker._next for
        why not ``get_message(timeout=...)``)."""
        try:
            if not self.pubsub.connection.can_read(timeout=timeout):
                return None
            message = self.pubsub.get_message(timeout=PARTIAL_TIMEOUT)
        except (redis.ConnectionError, OSError):
            self.reconnects += 1
            self.pubsub.close()
            self.pubsub = self._subscribe()
            return None
        return None if message is None else cbor2.loads(message["data"])

    def close(self) -> None:
        self.pubsub.close()


def main() -> None:
    spec = BridgeSpec.from_env()
    me = sender_id(int(os.environ[HUB_ENV]), int(os.environ[ID_ENV]))
    client = redis.Redis.from_url(spec.url)
    sub = Subscriber(client, spec.channel)
    ledger = Ledger(spec, me)
    try:
        _barrier(client, sub, spec, ledger)
        ledger.start()
        if spec.mode == "burst":
            _burst(client, sub, spec, ledger)
        else:
            _paced(client, sub, spec, ledger)
        _wait_rest(sub, ledger)
    finally:
        ledger.finish(reconnects=sub.reconnects)
        sub.close()
        client.close()


def _receive(sub: Subscriber, ledger: Ledger, readies: set[int], timeout: float) -> bool:
    value = sub.next(timeout)
    if value is None:
        return False
    if value[0] == "r":
        readies.add(value[1])
        return False
    return ledger.receive(value, time.monotonic_ns())


def _barrier(client: redis.Redis, sub: Subscriber, spec: BridgeSpec, ledger: Ledger) -> None:
    # NUMSUB counts a subscriber once the server has processed its SUBSCRIBE, ours included; from
    # then on every PUBLISH reaches all of them, so one ready each is enough.
    deadline = time.monotonic() + spec.timeout
    while client.pubsub_numsub(spec.channel)[0][1] < len(spec.senders):
        if time.monotonic() > deadline:
            raise TimeoutError("not every worker subscribed")
        time.sleep(0.005)
    client.publish(spec.channel, cbor2.dumps(["r", ledger.me]))
    readies: set[int] = set()
    while readies < set(spec.senders) and time.monotonic() < deadline:
        _receive(sub, ledger, readies, 1.0)


def _drain(sub: Subscriber, ledger: Ledger) -> bool:
    while (value := sub.next(0.0)) is not None:
        if value[0] == "d" and ledger.receive(value, time.monotonic_ns()):
            return True
    return False


def _burst(client: redis.Redis, sub: Subscriber, spec: BridgeSpec, ledger: Ledger) -> None:
    payload = b"x" * spec.payload
    pipe = client.pipeline(transaction=False)
    dumps = cbor2.dumps
    seq = 0
    while seq < spec.count and time.monotonic_ns() < ledger.deadline_ns:
        for _ in range(min(BATCH, spec.count - seq)):
            pipe.publish(spec.channel, dumps(["d", time.monotonic_ns(), ledger.me, seq, payload]))
            seq += 1
        pipe.execute()
        if _drain(sub, ledger):
            return


def _paced(client: redis.Redis, sub: Subscriber, spec: BridgeSpec, ledger: Ledger) -> None:
    payload = b"x" * spec.payload
    start = time.monotonic() + spec.start_offset_s(ledger.me)
    readies: set[int] = set()
    for seq in range(spec.count):
        due = start + seq * spec.interval_s
        while (wait := due - time.monotonic()) > 0:
            _receive(sub, ledger, readies, wait)
        client.publish(
            spec.channel, cbor2.dumps(["d", time.monotonic_ns(), ledger.me, seq, payload])
        )


def _wait_rest(sub: Subscriber, ledger: Ledger) -> None:
    """Until every message is in, the deadline, or IDLE seconds with nothing arriving: what
    pub/sub dropped never comes, and waiting for it would only make each lossy round last the
    whole timeout (the rate is taken up to the last receipt either way)."""
    readies: set[int] = set()
    idle_since = time.monotonic()
    while not ledger.complete:
        now = time.monotonic()
        left = min(ledger.deadline_ns / 1e9 - now, idle_since + IDLE - now)
        if left <= 0:
            return
        before = ledger.distinct + ledger.duplicates
        if _receive(sub, ledger, readies, min(left, 1.0)):
            return
        if ledger.distinct + ledger.duplicates != before:
            idle_since = time.monotonic()


if __name__ == "__main__":
    main()
