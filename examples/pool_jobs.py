"""Blocking and CPU-heavy calls in the job pool, while the workers' event loops stay free.

    stereo run pool_jobs:serve -w 2 --pool 2 --app-dir examples --bind 127.0.0.1:8000

Each worker answers TCP connections: a line ``N`` gets back the N-th prime, computed in a pool
process (plain, blocking Python: it would freeze the worker's loop if it ran there), and a line
``boom`` shows an exception coming back with the pool process's traceback. Try it with
``printf '20000\\n' | nc 127.0.0.1 8000``.
"""

from __future__ import annotations

from functools import partial

import trio

import stereo


def nth_prime(n: int) -> int:
    """Deliberately slow, plain Python: runs in a pool process, never in a worker's loop."""
    found, candidate = 0, 1
    while found < n:
        candidate += 1
        if all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
            found += 1
    return candidate


def boom() -> None:
    raise ValueError("raised in a pool process")


async def answer(worker: stereo.Worker, stream: stereo.Connection) -> None:
    async with stream:
        try:
            await stream.send_all(await reply_to(worker, await stream.receive_some(1024)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away


async def reply_to(worker: stereo.Worker, data: bytes) -> bytes:
    text = data.decode(errors="replace").strip()
    if text == "boom":
        try:
            await worker.run_sync(boom)
        except ValueError as exc:
            # The pool process's traceback came along as the cause (stereo.RemoteTraceback).
            remote = getattr(exc.__cause__, "text", "").strip().splitlines()
            reply = f"{exc!r}, raised at: {remote[-2].strip() if len(remote) > 1 else '?'}"
    elif text.isdigit() and 0 < int(text) <= 200_000:
        reply = str(await worker.run_sync(nth_prime, int(text)))
    else:
        reply = "send a number from 1 to 200000, or boom"
    return reply.encode() + b"\n"


async def serve(worker: stereo.Worker) -> None:
    await trio.serve_listeners(partial(answer, worker), worker.listeners)
