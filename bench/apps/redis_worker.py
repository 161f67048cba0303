"""A Redis pub/sub peer worker: redis-py, one channel, cbor2 payloads.

Publishing goes through a non-transactional pipeline, a batch per round trip, since one PUBLISH
per round trip would measure the loopback latency rather than Redis; between batches the worker
drains its subscription without blocking, so it sends and receives at once.

The start barrier waits until ``PUBSUB NUMSUB`` shows all N subscribers (from then on every
PUBLISH reaches everyone), then publishes ``["r", id]`` once and waits for N readies.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
import redis

from ._spec import ID_ENV, Spec, Tally, data_message

BATCH = 64
PARTIAL_TIMEOUT = 10.0


def main() -> None:
    spec = Spec.from_env()
    worker_id = int(os.environ[ID_ENV])
    channel = spec.endpoints["channel"]
    client = redis.Redis.from_url(spec.endpoints["url"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    tally = Tally(spec, worker_id)
    _barrier(client, pubsub, channel, spec.workers, worker_id, tally)
    tally.start()
    if spec.mode == "relay":
        _relay(client, pubsub, channel, spec, tally)
    else:
        _latency(client, pubsub, channel, spec, tally)
    tally.finish()
    pubsub.close()
    client.close()


def _next(pubsub: Any, timeout: float) -> Any | None:
    """The next decoded message, or None (also for the ignored subscribe confirmation).

    Waiting is done by ``can_read``: a ``get_message(timeout=0)`` that finds only part of a big
    message raises TimeoutError, and redis-py answers that by reconnecting, which loses messages.
    Once bytes are there, the rest of the message is moments away.
    """
    if not pubsub.connection.can_read(timeout=timeout):
        return None
    message = pubsub.get_message(timeout=PARTIAL_TIMEOUT)
    if message is None:
        return None
    return cbor2.loads(message["data"])


def _barrier(client: redis.Redis, pubsub: Any, channel: str, n: int, me: int, tally: Tally) -> None:
    # NUMSUB counts a subscriber once the server has processed its SUBSCRIBE, ours included.
    while client.pubsub_numsub(channel)[0][1] < n:
        time.sleep(0.005)
    client.publish(channel, cbor2.dumps(["r", me]))
    readies = 0
    while readies < n:
        value = _next(pubsub, 1.0)
        if value is None:
            continue
        if value[0] == "r":
            readies += 1
        else:
            tally.receive(value)


def _drain(pubsub: Any, tally: Tally) -> bool:
    while (value := _next(pubsub, 0.0)) is not None:
        if tally.receive(value):
            return True
    return False


def _relay(client: redis.Redis, pubsub: Any, channel: str, spec: Spec, tally: Tally) -> None:
    payload = b"x" * spec.payload
    remaining = spec.sends(tally.worker_id)
    pipe = client.pipeline(transaction=False)
    dumps = cbor2.dumps
    while remaining and not tally.complete:
        for _ in range(min(BATCH, remaining)):
            pipe.publish(channel, dumps(data_message(payload)))
        remaining -= min(BATCH, remaining)
        pipe.execute()
        if _drain(pubsub, tally):
            return
    _wait_rest(pubsub, tally)


def _latency(client: redis.Redis, pubsub: Any, channel: str, spec: Spec, tally: Tally) -> None:
    payload = b"x" * spec.payload
    start = time.monotonic_ns()
    for i in range(spec.sends(tally.worker_id)):
        due = start + i * spec.interval_ns
        while (wait_ns := due - time.monotonic_ns()) > 0:
            value = _next(pubsub, wait_ns / 1e9)
            if value is not None and tally.receive(value):
                return
        client.publish(channel, cbor2.dumps(data_message(payload)))
    _wait_rest(pubsub, tally)


def _wait_rest(pubsub: Any, tally: Tally) -> None:
    while not tally.complete:
        left = (tally.deadline_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            return
        value = _next(pubsub, min(left, 1.0))
        if value is not None and tally.receive(value):
            return


if __name__ == "__main__":
    main()
