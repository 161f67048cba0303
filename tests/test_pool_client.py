"""The caller's side of the job pool without processes: PoolClient driven by hand through an
Outbox with no socket, frames fed as the worker's hub reader would feed them."""

from __future__ import annotations

import operator
import pickle
import signal
from typing import Any

import pytest
import trio
import trio.testing

from stereo.errors import PoolError, PoolProcessDied
from stereo.outbox import Outbox
from stereo.pool.client import PoolClient
from stereo.wire.framing import FrameReader
from stereo.wire.jobs import NEXT_IS_YOURS, Op, decode_job, encode_job
from stereo.wire.protocol import Kind, encode_map

LIMIT = 1 << 20


def members(pools: dict[str, list[list[int]]], **rest: list[int]) -> bytes:
    body = encode_map(Kind.MEMBERS, {"pools": pools, "dead": [], "drained": [], **rest})
    return body[5:]


def sent(outbox: Outbox) -> list[Any]:
    reader = FrameReader(LIMIT)
    reader.receive_data(b"".join(outbox.take()))
    return [decode_job(frame.body) for frame in reader.frames()]


def answer(client: PoolClient, pool_address: int, job: int, value: Any) -> None:
    frame = encode_job(pool_address, Op.RESULT, job, pickle.dumps(value))
    client.receive_frame(Kind.DIRECT, frame[5:])


def notice(client: PoolClient, pool_address: int, op: int, job: int, body: bytes = b"") -> None:
    client.receive_frame(Kind.DIRECT, encode_job(pool_address, op, job, body)[5:])


@pytest.mark.parametrize("how", ["flag", "started", "none"])
async def test_a_dead_pool_process_fails_the_job_it_started_and_the_rest_go_elsewhere(
    how: str,
) -> None:
    outbox = Outbox(None)
    client = PoolClient(outbox, LIMIT)
    client.pools = {"default"}
    client.receive_frame(Kind.MEMBERS, members({"default": [[7, 70]]}))
    outcomes: dict[int, Any] = {}

    async def call(n: int) -> None:
        try:
            outcomes[n] = await client.run_sync(operator.add, (n, 100), {})
        except PoolProcessDied as exc:
            outcomes[n] = exc

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
        assert [(f.peer, f.op) for f in sent(outbox)] == [(7, Op.JOB)] * 3
        # Job 1 is answered; job 2 starts (said by a flag on that answer, or by STARTED), or
        # the process went on to another worker's job ("none").
        if how == "flag":
            notice(client, 7, Op.RESULT | NEXT_IS_YOURS, 1, pickle.dumps(101))
        else:
            notice(client, 7, Op.RESULT, 1, pickle.dumps(101))
        if how == "started":
            notice(client, 7, Op.STARTED, 2)
        # 7 dies; 8 has joined: only the job it said it started may have run there.
        client.receive_frame(Kind.MEMBERS, members({"default": [[8, 80]]}, dead=[7]))
        await trio.testing.wait_all_tasks_blocked()
        again = sent(outbox)
        expected = [(8, 3)] if how != "none" else [(8, 2), (8, 3)]
        assert sorted((f.peer, f.job) for f in again) == expected  # in any order
        for frame in again:
            answer(client, 8, frame.job, frame.job)
    assert outcomes[0] == 101
    if how == "none":
        assert outcomes[1] == 2
    else:
        assert isinstance(outcomes[1], PoolProcessDied) and "pool process 70" in str(outcomes[1])
    assert outcomes[2] == 3


async def test_a_bounced_job_is_sent_again_and_an_unknown_pool_is_refused() -> None:
    outbox = Outbox(None)
    client = PoolClient(outbox, LIMIT)
    client.pools = {"default"}
    client.receive_frame(Kind.MEMBERS, members({"default": [[7, 70], [9, 90]]}))
    async with trio.open_nursery() as nursery:
        result: list[Any] = []

        async def call() -> None:
            result.append(await client.run_sync(operator.neg, (5,), {}))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        (first,) = sent(outbox)
        # It was leaving: the master hands the frame back, it goes to the other one.
        other = [[9, 90]] if first.peer == 7 else [[7, 70]]
        client.receive_frame(Kind.MEMBERS, members({"default": other}))
        bounced = encode_job(first.peer, Op.JOB, first.job, first.body)
        client.receive_frame(Kind.BOUNCED, bounced[5:])
        await trio.testing.wait_all_tasks_blocked()
        (second,) = sent(outbox)
        assert second.peer != first.peer and second.job == first.job
        answer(client, second.peer, second.job, -5)
    assert result == [-5]
    with pytest.raises(PoolError, match="no job pool 'pdf'"):
        await client.run_sync(operator.neg, (1,), {}, pool="pdf")


async def test_a_caller_cancelled_before_its_job_left_leaves_no_trace() -> None:
    outbox = Outbox(None, limit=64)  # room for about one job frame
    client = PoolClient(outbox, LIMIT)
    client.pools = {"default"}
    client.receive_frame(Kind.MEMBERS, members({"default": [[7, 70]]}))
    async with trio.open_nursery() as nursery:
        for text in (b"x" * 40, b"y" * 40):
            nursery.start_soon(client.run_sync, operator.neg, (text,), {})
            await trio.testing.wait_all_tasks_blocked()
        target = client._targets[7]
        assert len(target.jobs) == 2  # the first sent, the second placed, waiting for room
        nursery.cancel_scope.cancel()
    # The first is owed an answer (or a CANCELLED); the second never left and is forgotten.
    assert len(target.jobs) == 1 and len(client._jobs) == 1


async def test_kill_on_cancel_kills_only_once_its_job_is_said_to_run() -> None:
    # A real process stands for the pool process: only its pid matters here.
    stand_in = await trio.lowlevel.open_process(["sleep", "60"])
    try:
        outbox = Outbox(None)
        client = PoolClient(outbox, LIMIT)
        client.pools = {"default"}
        client.receive_frame(Kind.MEMBERS, members({"default": [[7, stand_in.pid]]}))
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def call() -> None:
                with scope:
                    await client.run_sync(operator.neg, (1,), {}, kill_on_cancel=True)

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        # Not said to run: only a CANCEL goes out, nothing is killed.
        assert [(f.op, f.job) for f in sent(outbox)] == [(Op.JOB, 1), (Op.CANCEL, 1)]
        assert stand_in.poll() is None
        # The CANCEL came too late: the job starts; the process running it is killed.
        notice(client, 7, Op.STARTED, 1)
        with trio.fail_after(10):
            assert await stand_in.wait() == -signal.SIGKILL
    finally:
        stand_in.kill()
        await stand_in.wait()
