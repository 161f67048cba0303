"""The stereo leg of the bridge workload: ``stereo run bench.apps.bridge_stereo:serve -w W
--bridge URL --bridge-name NAME``, started once per hub with ``STEREO_BENCH_HUB`` set.

The barrier is stereo_relay's, across hubs: a bridged hub delivers to its workers only what it
reads back from the broker, and a hub that starts later begins reading at the broker's tail, so
each worker repeats its ready every 10 ms until it has seen every sender's, then sends one last
ready (which now reaches everyone) before its data.
"""

from __future__ import annotations

import os
import time

import trio

from ._bridge import HUB_ENV, BridgeSpec, Ledger, sender_id
from .stereo_relay import BARRIER_TICK, Worker


async def serve(worker: Worker) -> None:
    spec = BridgeSpec.from_env()
    me = sender_id(int(os.environ[HUB_ENV]), worker.id)
    ledger = Ledger(spec, me)
    # Bounded even if the barrier never completes (a hub that failed to start).
    with trio.move_on_after(spec.timeout + 60):
        await _run(worker, spec, ledger)
    ledger.finish()
    # Returning would end the worker (and the master would restart it); the harness stops the
    # masters with SIGTERM once every worker is done.
    await trio.sleep_forever()


async def _run(worker: Worker, spec: BridgeSpec, ledger: Ledger) -> None:
    everyone = set(spec.senders)
    async with trio.open_nursery() as nursery:
        messages = worker.messages()  # subscribed before the first ready, or ours could pass us
        barrier = trio.CancelScope()
        nursery.start_soon(_announce, worker, ledger.me, barrier)
        readies: set[int] = set()
        async for batch in messages.batches():
            now = time.monotonic_ns()
            complete = False
            for msg in batch:
                value = msg.data
                if value[0] == "d":
                    if ledger.receive(value, now):
                        complete = True
                        break
                elif value[0] == "r":
                    readies.add(value[1])
            if complete:
                break
            if readies >= everyone and not barrier.cancel_called:
                barrier.cancel()
                await worker.broadcast(["r", ledger.me])
                ledger.start()
                nursery.cancel_scope.deadline = trio.current_time() + spec.timeout
                nursery.start_soon(_send, worker, spec, ledger.me)
        nursery.cancel_scope.cancel()


async def _announce(worker: Worker, me: int, scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await worker.broadcast(["r", me])
            await trio.sleep(BARRIER_TICK)


async def _send(worker: Worker, spec: BridgeSpec, me: int) -> None:
    payload = b"x" * spec.payload
    if spec.mode == "burst":
        for seq in range(spec.count):
            await worker.broadcast(["d", time.monotonic_ns(), me, seq, payload])
        return
    start = trio.current_time() + spec.start_offset_s(me)
    for seq in range(spec.count):
        await trio.sleep_until(start + seq * spec.interval_s)
        await worker.broadcast(["d", time.monotonic_ns(), me, seq, payload])
