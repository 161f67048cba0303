"""Worker 1's first process blocks its trio loop (time.sleep) once READY has surely reached the
master; worker 2 stays busy on the CPU for BUSY_SECONDS, with checkpoints, and must survive."""

import os
import time

import trio
from _once import first_time

MARKER = os.environ["HANG_MARKER"]
BUSY_SECONDS = float(os.environ.get("BUSY_SECONDS", "3"))


async def serve(worker):
    inbox = worker.messages()
    print(f"started pid={os.getpid()} at={time.time():.6f}", flush=True)
    # Our own broadcast coming back means the READY queued before it reached the master too.
    await worker.broadcast(["up", worker.id])
    async for msg in inbox:
        if msg.data == ["up", worker.id]:
            break
    if worker.id == 1 and first_time(MARKER):
        print(f"blocking the loop at={time.time():.6f}", flush=True)
        time.sleep(60)
    elif worker.id == 2:
        start = time.monotonic()
        rounds = 0
        while time.monotonic() - start < BUSY_SECONDS:
            sum(range(2000))  # ~ tens of microseconds of CPU per round
            rounds += 1
            if rounds % 20 == 0:
                await trio.lowlevel.checkpoint()
        print(f"busy done after {time.monotonic() - start:.2f} s", flush=True)
    await trio.sleep_forever()
