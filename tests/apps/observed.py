"""Test app for the metrics and dashboard tests.

Each process broadcasts ["up", pid] once started and prints "ready" when that broadcast comes back:
the master read its READY first (same connection, in order), so it counts as ready by then.
Worker 1 broadcasts OBSERVED_FLOOD messages of OBSERVED_PAD characters when it receives "flood",
WINDOW at a time, each window once the last one has come back to it: the flood comes back to
its sender too, and a sender that outran its own reading would be cut off as a slow consumer
of its own broadcasts (seen on a loaded CI machine).
With OBSERVED_SLOW_MARKER, the first process of worker 2 never reads its broadcasts (so the
master cuts it off as a slow consumer); it prints "ready" once its "up" is sent.
"""

import os

import trio
from _once import first_time

FLOOD = int(os.environ.get("OBSERVED_FLOOD", "2000"))
PAD = "x" * int(os.environ.get("OBSERVED_PAD", "500"))
MARKER = os.environ.get("OBSERVED_SLOW_MARKER")
WINDOW = 32  # broadcasts in flight: 32 x 3,000 bytes stay well under a 256 KiB outbox limit


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
    sent = 0
    while sent < FLOOD:
        window = min(WINDOW, FLOOD - sent)
        for _ in range(window):
            await worker.broadcast(PAD)
        sent += window
        back = 0
        while back < window:  # the others' broadcasts ("up"s of respawned workers) pass by
            message = await anext(messages)
            back += message.sender == worker.id and message.data == PAD
    messages.close()
    print("flooded", flush=True)
    await trio.sleep_forever()
