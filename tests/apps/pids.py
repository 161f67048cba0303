"""Serves TCP: answers each connection with 'worker ID pid PID' and closes it.

With PIDS_BUSY_SECONDS set, a worker then blocks its event loop that long (a busy worker), so it
cannot accept the next connection and another worker must: the shared socket balances by who is
free, not round-robin.
"""

import os
import time

import trio

BUSY = float(os.environ.get("PIDS_BUSY_SECONDS", "0"))


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        await stream.send_all(f"worker {worker.id} pid {os.getpid()}\n".encode())
        if BUSY:
            time.sleep(BUSY)

    await trio.serve_listeners(handler, worker.listeners)
