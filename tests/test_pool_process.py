"""A real pool process (``python -m stereo.pool``) with the test as its master, over a real
socketpair: what it sends before, during and after the jobs it is given (docs/pool.md)."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from conftest import APPS

from stereo.wire.framing import Frame, FrameReader
from stereo.wire.jobs import NEXT_IS_YOURS, JobFrame, Op, decode_job, encode_job
from stereo.wire.protocol import PROTOCOL_VERSION, Kind, encode_map

LIMIT = 1 << 20
TIMEOUT = 60
CALLER = 5  # the hub address the jobs come from, as the master would have stamped it


class Hub:
    """The master's end of one pool process's hub connection."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.reader = FrameReader(LIMIT)
        self.pending: list[Frame] = []

    async def frame(self) -> Frame:
        while not self.pending:
            data = await self.sock.recv(1 << 16)
            assert data, "the pool process closed the connection"
            self.reader.receive_data(data)
            self.pending.extend(self.reader.frames())
        return self.pending.pop(0)

    async def job_frame(self) -> JobFrame:
        """The next DIRECT frame (heartbeats and counts skipped)."""
        while (frame := await self.frame()).kind != Kind.DIRECT:
            pass
        return decode_job(frame.body)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]


@asynccontextmanager
async def pool_process() -> AsyncIterator[Hub]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ, STEREO_HUB_FD=str(theirs.fileno()))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "stereo.pool"], env=env, pass_fds=[theirs.fileno()]
    )
    theirs.close()
    hub = Hub(trio.socket.from_stdlib_socket(ours))
    try:
        assert (await hub.frame()).kind == Kind.HELLO
        welcome = {
            "version": PROTOCOL_VERSION,
            "max_message_size": LIMIT,
            "heartbeat_interval": 30.0,
            "app_dir": str(APPS),
        }
        await hub.send(encode_map(Kind.WELCOME, welcome))
        assert (await hub.frame()).kind == Kind.READY
        yield hub
    finally:
        process.kill()
        await process.wait()
        hub.sock.close()


def job(number: int, fn: Any, *args: Any) -> bytes:
    return encode_job(CALLER, Op.JOB, number, pickle.dumps((fn, args, {})))


async def test_each_job_is_announced_before_it_runs_by_started_or_by_the_answer_before() -> None:
    with trio.fail_after(TIMEOUT):
        async with pool_process() as hub:
            await hub.send(b"".join(job(n, abs, -n) for n in (1, 2, 3)))
            got = [await hub.job_frame() for _ in range(4)]
    # STARTED for the first (nothing answered before it); each answer then says that the
    # next job, of the same caller, starts; the last answer says nothing follows.
    assert [(f.op, f.job) for f in got] == [
        (Op.STARTED, 1),
        (Op.RESULT | NEXT_IS_YOURS, 1),
        (Op.RESULT | NEXT_IS_YOURS, 2),
        (Op.RESULT, 3),
    ]
    assert [pickle.loads(f.body) for f in got[1:]] == [1, 2, 3]
    assert {f.peer for f in got} == {CALLER}


async def test_a_cancel_is_not_overtaken_by_a_stream_of_quick_jobs(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    quick = 1000  # each well under the 0.2 ms after which the old loop looked for frames
    last = quick + 1
    with trio.fail_after(TIMEOUT):
        async with pool_process() as hub:
            # While the first job sleeps, every other one reaches the pool process's socket;
            # after it, the process reads them all at once.
            stream = b"".join(job(n, sum, range(5000)) for n in range(1, quick + 1))
            await hub.send(job(0, time.sleep, 0.3) + stream + job(last, os.mkdir, str(ran)))
            while (frame := await hub.job_frame()).job != 1 or frame.op == Op.STARTED:
                pass
            # The stream of quick jobs has started (and the frames after them were read before
            # it did): only now the cancellation of the last job.
            await hub.send(encode_job(CALLER, Op.CANCEL, last))
            answers: dict[int, int] = {}
            while last not in answers:
                frame = await hub.job_frame()
                if frame.op != Op.STARTED:
                    answers[frame.job] = frame.op & ~NEXT_IS_YOURS
    assert answers[last] == Op.CANCELLED and not ran.exists()
    assert len(answers) < quick  # it was skipped while quick jobs were still queued
