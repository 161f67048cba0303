"""Slow-consumer and flood probe.

Worker 1 only receives. Its first process, when FLOOD_SLOW=1, stops reading broadcasts after its
hello (an inbox of one message, never drained), so the master must cut it off. Workers 2..N flood:
after a barrier on hellos, each broadcasts FLOOD_COUNT numbered messages, paced by a credit window
on its own messages coming back (so a *fast* receiver never lags by more than the window), checks
that the seqs it receives are contiguous, and prints RESULT with its receive rate.
"""

import json
import os
import time

import trio
from _once import first_time

WORKERS = int(os.environ["FLOOD_WORKERS"])
COUNT = int(os.environ.get("FLOOD_COUNT", "40000"))
WINDOW = int(os.environ.get("FLOOD_WINDOW", "2000"))
PAD = "x" * int(os.environ.get("FLOOD_PAD", "64"))
SLOW = os.environ.get("FLOOD_SLOW") == "1"
MARKER = os.environ["FLOOD_MARKER"]


async def barrier(worker, inbox):
    """Hello from everyone, re-sent to each newcomer (bounded: once per peer seen)."""
    seen = set()
    await worker.broadcast(["hi", worker.id])
    async for msg in inbox:
        if msg.data[0] == "hi" and msg.data[1] not in seen:
            seen.add(msg.data[1])
            if msg.data[1] != worker.id:
                await worker.broadcast(["hi", worker.id])
            if len(seen) == WORKERS:
                return


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    if worker.id == 1:
        if SLOW and first_time(MARKER):
            inbox = worker.messages(limit=16)
            await barrier(worker, inbox)
            print("slow: not reading", flush=True)  # the inbox fills; the hub is not read again
            await trio.sleep_forever()
        inbox = worker.messages()
        await barrier(worker, inbox)
        async for _ in inbox:
            pass
        return

    inbox = worker.messages()
    await worker.broadcast(["hi", worker.id])
    seen = set()
    acked = -1
    room = trio.Event()
    flooders = WORKERS - 1
    expected = flooders * COUNT
    received = 0
    gaps = 0
    last_seq = None
    started = None

    async def flood():
        nonlocal room
        for n in range(COUNT):
            while n - acked > WINDOW:
                room = trio.Event()
                await room.wait()
            await worker.broadcast(["d", n, PAD])

    async with trio.open_nursery() as nursery:
        async for msg in inbox:
            if last_seq is not None and msg.seq != last_seq + 1:
                gaps += 1
            last_seq = msg.seq
            kind = msg.data[0]
            if kind == "hi":
                if msg.data[1] not in seen:
                    seen.add(msg.data[1])
                    if msg.data[1] != worker.id:
                        await worker.broadcast(["hi", worker.id])
                    if len(seen) == WORKERS and started is None:
                        started = time.monotonic()
                        nursery.start_soon(flood)
            elif kind == "d":
                received += 1
                if msg.sender == worker.id:
                    acked = msg.data[1]
                    room.set()
                if received == expected:
                    elapsed = time.monotonic() - started
                    result = {
                        "received": received,
                        "gaps": gaps,
                        "seconds": elapsed,
                        "rate": received / elapsed,
                    }
                    print("RESULT " + json.dumps(result), flush=True)
                    break
    await trio.sleep_forever()
