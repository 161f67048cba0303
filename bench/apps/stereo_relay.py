"""The stereo leg of the relay and latency workloads.

Run as ``stereo run bench.apps.stereo_relay:serve -w W``.


A broadcast reaches only the workers subscribed when it is relayed, and workers start at
different times, so the barrier repeats: every worker subscribes, then broadcasts ``["r", id]``
every 10 ms until it has seen readies from all N ids, and sends one last ready, which now reaches
everyone (each of them subscribed before sending the ready we saw), before its data. A faster
worker's data may thus reach us while we still wait for readies; it counts.

Once a worker has every expected message it reports and then idles: returning from ``serve``
would end the worker, and the harness stops the master with SIGTERM when every worker is done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import trio

from ._spec import Spec, Tally, data_message


class Message(Protocol):
    @property
    def data(self) -> Any: ...


class MessageStream(Protocol):
    def batches(self) -> AsyncIterator[list[Message]]: ...


class Worker(Protocol):
    """The part of stereo's worker API this app uses (kept structural so the suite type-checks
    without depending on the runtime's private classes)."""

    @property
    def id(self) -> int: ...

    async def broadcast(self, value: Any) -> None: ...

    def messages(self) -> MessageStream: ...


async def serve(worker: Worker) -> None:
    spec = Spec.from_env()
    tally = Tally(spec, worker.id)
    with trio.move_on_after(spec.timeout + 60):
        await _run(worker, spec, tally)
    tally.finish()
    await trio.sleep_forever()


BARRIER_TICK = 0.01


async def _run(worker: Worker, spec: Spec, tally: Tally) -> None:
    async with trio.open_nursery() as nursery:
        # Subscribe before the first ready, or our own could pass us by.
        messages = worker.messages()
        barrier = trio.CancelScope()
        nursery.start_soon(_announce, worker, barrier)
        readies: set[int] = set()
        # Batches, as a high-rate consumer would read (the ZeroMQ worker drains its socket in
        # a loop the same way); `async for msg in messages` costs ~0.25 us more per message.
        async for batch in messages.batches():
            complete = False
            for msg in batch:
                value = msg.data
                if value[0] == "d":
                    if tally.receive(value):
                        complete = True
                        break
                elif value[0] == "r":
                    readies.add(value[1])
            if complete:
                break
            if len(readies) == spec.workers and not barrier.cancel_called:
                barrier.cancel()
                await worker.broadcast(["r", worker.id])
                tally.start()
                nursery.cancel_scope.deadline = trio.current_time() + spec.timeout
                nursery.start_soon(_send, worker, spec, tally)
        nursery.cancel_scope.cancel()


async def _announce(worker: Worker, scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await worker.broadcast(["r", worker.id])
            await trio.sleep(BARRIER_TICK)


async def _send(worker: Worker, spec: Spec, tally: Tally) -> None:
    payload = b"x" * spec.payload
    n = spec.sends(worker.id)
    if spec.mode == "relay":
        for _ in range(n):
            await worker.broadcast(data_message(payload))
        return
    start = trio.current_time()
    interval = spec.interval_ns / 1e9
    for i in range(n):
        await trio.sleep_until(start + i * interval)
        await worker.broadcast(data_message(payload))
