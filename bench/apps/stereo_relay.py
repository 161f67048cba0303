"""The stereo leg of the relay and latency workloads.

Run as ``stereo run bench.apps.stereo_relay:serve -w W`` (each message through ``async for msg
in worker.messages()``), or ``...:serve_batches`` (``messages().batches()``, the peer
``stereo-batches``).

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
    def __aiter__(self) -> AsyncIterator[Message]: ...

    def batches(self) -> AsyncIterator[list[Message]]: ...


class Worker(Protocol):
    """The part of stereo's worker API this app uses (kept structural so the suite type-checks
    without depending on the runtime's private classes). Both ways in exist in every
    installation a ``--baseline`` may name."""

    @property
    def id(self) -> int: ...

    async def broadcast(self, value: Any) -> None: ...

    def messages(self) -> MessageStream: ...


async def serve(worker: Worker) -> None:
    """The peer ``stereo``: ``async for msg in worker.messages()``, the API most apps use."""
    await _serve(worker, batched=False)


async def serve_batches(worker: Worker) -> None:
    """The peer ``stereo-batches``: ``async for batch in worker.messages().batches()``."""
    await _serve(worker, batched=True)


async def _serve(worker: Worker, *, batched: bool) -> None:
    spec = Spec.from_env()
    tally = Tally(spec, worker.id)
    with trio.move_on_after(spec.timeout + 60):
        await _run(worker, spec, tally, batched)
    tally.finish()
    await trio.sleep_forever()


BARRIER_TICK = 0.01


class _Barrier:
    """The readies heard so far; once all N are in, one last ready, then the data."""

    def __init__(self, worker: Worker, spec: Spec, tally: Tally, nursery: trio.Nursery) -> None:
        self.worker = worker
        self.spec = spec
        self.tally = tally
        self.nursery = nursery
        self.announcing = trio.CancelScope()
        self.readies: set[int] = set()

    async def heard(self, worker_id: int) -> None:
        self.readies.add(worker_id)
        if len(self.readies) < self.spec.workers or self.announcing.cancel_called:
            return
        self.announcing.cancel()
        await self.worker.broadcast(["r", self.worker.id])
        self.tally.start()
        self.nursery.cancel_scope.deadline = trio.current_time() + self.spec.timeout
        self.nursery.start_soon(_send, self.worker, self.spec, self.tally)


async def _run(worker: Worker, spec: Spec, tally: Tally, batched: bool) -> None:
    async with trio.open_nursery() as nursery:
        # Subscribe before the first ready, or our own could pass us by.
        messages = worker.messages()
        barrier = _Barrier(worker, spec, tally, nursery)
        nursery.start_soon(_announce, worker, barrier.announcing)
        # Two loops rather than one over an adapter: each is the code an app would write, and
        # neither pays for the other's shape.
        if batched:
            await _take_batches(messages, tally, barrier)
        else:
            await _take_each(messages, tally, barrier)
        nursery.cancel_scope.cancel()


async def _take_each(messages: MessageStream, tally: Tally, barrier: _Barrier) -> None:
    async for msg in messages:
        value = msg.data
        if value[0] == "d":
            if tally.receive(value):
                return
        elif value[0] == "r":
            await barrier.heard(value[1])


async def _take_batches(messages: MessageStream, tally: Tally, barrier: _Barrier) -> None:
    # As a high-rate consumer would read (the ZeroMQ worker drains its socket in a loop the
    # same way): one await per batch.
    async for batch in messages.batches():
        for msg in batch:
            value = msg.data
            if value[0] == "d":
                if tally.receive(value):
                    return
            elif value[0] == "r":
                await barrier.heard(value[1])


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
