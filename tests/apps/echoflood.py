"""A sender that cannot keep up with its own echoes: it subscribes, never reads, and broadcasts
64 KiB messages as fast as it can, so the master cuts it off as a slow consumer."""

import os


async def serve(worker):
    worker.messages(limit=4)  # subscribed, never read: its inbox fills, then its hub reader stops
    print(f"started pid={os.getpid()}", flush=True)
    payload = b"x" * 65536
    while True:
        await worker.broadcast(payload)
