"""Test app for the metrics and dashboard tests: says when it is ready; worker 1 broadcasts
OBSERVED_FLOOD messages of OBSERVED_PAD characters when it receives "flood"; the first process
of worker 2 never reads its broadcasts (the master cuts it off as a slow consumer), its
successors do; "hold" on worker 3 makes its first process stop reading too."""

import os

import trio
from _once import first_time

FLOOD = int(os.environ.get("OBSERVED_FLOOD", "2000"))
PAD = "x" * int(os.environ.get("OBSERVED_PAD", "500"))
MARKER = os.environ.get("OBSERVED_SLOW_MARKER")


async def serve(worker):
    slow = worker.id == 2 and MARKER is not None and first_time(MARKER)
    messages = worker.messages(limit=1 if slow else None)
    print(f"ready pid={os.getpid()}", flush=True)
    if slow:
        await trio.sleep_forever()  # never reads: its inbox fills, then the master's outbox
    async for message in messages:
        if message.data == "flood" and worker.id == 1:
            for _ in range(FLOOD):
                await worker.broadcast(PAD)
            print("flooded", flush=True)
