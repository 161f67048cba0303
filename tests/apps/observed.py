"""Test app for the metrics and dashboard tests.

Each process broadcasts ["up", pid] once started and prints "ready" when that broadcast comes back:
the master read its READY first (same connection, in order), so it counts as ready by then.
Worker 1 broadcasts OBSERVED_FLOOD messages of OBSERVED_PAD characters when it receives "flood"
(and reads nothing from then on).
With OBSERVED_SLOW_MARKER, the first process of worker 2 never reads its broadcasts (so the
master cuts it off as a slow consumer); it prints "ready" once its "up" is sent.
"""

import os

import trio
from _once import first_time

FLOOD = int(os.environ.get("OBSERVED_FLOOD", "2000"))
PAD = "x" * int(os.environ.get("OBSERVED_PAD", "500"))
MARKER = os.environ.get("OBSERVED_SLOW_MARKER")


async def serve(worker):
    slow = worker.id == 2 and MARKER is not None and first_time(MARKER)
    messages = worker.messages(limit=1 if slow else None)
    await worker.broadcast(["up", os.getpid()])
    if slow:
        print(f"ready pid={os.getpid()} (not reading)", flush=True)
        await trio.sleep_forever()  # its inbox fills, then the master's outbox for it
    async for message in messages:
        if message.data == ["up", os.getpid()]:
            print(f"ready pid={os.getpid()}", flush=True)
        elif message.data == "flood" and worker.id == 1:
            break
    else:
        return
    messages.close()  # worker 1 stops reading (unsubscribed: it is not held back) and floods
    for _ in range(FLOOD):
        await worker.broadcast(PAD)
        await trio.sleep(0)  # its hub reader runs too: its own flood comes back to it
    print("flooded", flush=True)
    await trio.sleep_forever()
