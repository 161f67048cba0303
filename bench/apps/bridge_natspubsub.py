"""A second peer of the bridge workload: core NATS pub/sub, one message per publish (nats-py).

Every worker (a plain process; two "hubs" of W, which only label them) publishes each broadcast
as one message on one subject and subscribes to it. nats-py buffers publishes and its flusher
writes them out together, as a pipelining client does; one message is still one PUB. Core NATS
orders per publisher only and delivers at most once: a subscriber that falls behind is cut off
by the server as a slow consumer, and what it missed is gone. The client reconnects (counted as
"resubscribed") and the ledger shows the loss.

Barrier: each worker subscribes (flushed: the server has it) before it says ready, every 10 ms,
until it has heard every sender's ready, and once more whenever it hears a sender for the first
time (who may have subscribed after its last one); a ready heard means its sender was
subscribed, so every data message reaches everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import cbor2
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from ._bridge import HUB_ENV, BridgeSpec, Ledger, sender_id
from ._spec import ID_ENV

BARRIER_TICK = 0.01
IDLE = 5.0
YIELD_EVERY = 256  # publishes between two yields to the loop (the subscription's callback)


async def run(spec: BridgeSpec, ledger: Ledger) -> int:
    reconnects = 0

    async def reconnected() -> None:
        nonlocal reconnects
        reconnects += 1

    async def quiet(exc: Exception) -> None:
        pass  # a slow-consumer cut shows as a reconnect and as loss in the ledger

    nc = await nats.connect(spec.url, reconnected_cb=reconnected, error_cb=quiet)
    readies: set[int] = set()
    everyone = set(spec.senders)
    complete = asyncio.Event()
    heard = asyncio.Event()
    progress = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        value = cbor2.loads(msg.data)
        if value[0] == "r":
            if value[1] not in readies:
                readies.add(value[1])
                # Once more for a newcomer, who may have subscribed after our last ready.
                await nc.publish(spec.channel, cbor2.dumps(["r", ledger.me]))
            if readies >= everyone:
                heard.set()
        elif ledger.receive(value, time.monotonic_ns()):
            complete.set()
        progress.set()

    # No pending limit of the client's own: the server's slow-consumer cut is the peer's loss.
    await nc.subscribe(spec.channel, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0)
    await nc.flush()
    try:
        async with asyncio.timeout(spec.timeout):
            while not heard.is_set():
                await nc.publish(spec.channel, cbor2.dumps(["r", ledger.me]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BARRIER_TICK):
                        await heard.wait()
        ledger.start()
        if spec.mode == "burst":
            await _burst(nc, spec, ledger)
        else:
            await _paced(nc, spec, ledger)
        await nc.flush()
        await _wait_rest(complete, progress, ledger)
    finally:
        await nc.close()
    return reconnects


async def _burst(nc: Client, spec: BridgeSpec, ledger: Ledger) -> None:
    payload = b"x" * spec.payload
    dumps = cbor2.dumps
    for seq in range(spec.count):
        await nc.publish(spec.channel, dumps(["d", time.monotonic_ns(), ledger.me, seq, payload]))
        if seq % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let the subscription's callback drain what came


async def _paced(nc: Client, spec: BridgeSpec, ledger: Ledger) -> None:
    payload = b"x" * spec.payload
    loop = asyncio.get_running_loop()
    start = loop.time() + spec.start_offset_s(ledger.me)
    for seq in range(spec.count):
        await asyncio.sleep(max(0.0, start + seq * spec.interval_s - loop.time()))
        await nc.publish(
            spec.channel, cbor2.dumps(["d", time.monotonic_ns(), ledger.me, seq, payload])
        )


async def _wait_rest(complete: asyncio.Event, progress: asyncio.Event, ledger: Ledger) -> None:
    """Until every message is in, the deadline, or IDLE seconds with nothing arriving (what
    core NATS dropped never comes)."""
    while not complete.is_set():
        left = min(ledger.deadline_ns / 1e9 - time.monotonic(), IDLE)
        if left <= 0:
            return
        progress.clear()
        try:
            async with asyncio.timeout(left):
                await progress.wait()
        except TimeoutError:
            return


def main() -> None:
    spec = BridgeSpec.from_env()
    me = sender_id(int(os.environ[HUB_ENV]), int(os.environ[ID_ENV]))
    ledger = Ledger(spec, me)
    reconnects = 0
    try:
        reconnects = asyncio.run(run(spec, ledger))
    finally:
        ledger.finish(reconnects=reconnects)


if __name__ == "__main__":
    main()
