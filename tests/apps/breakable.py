"""Imports fine until the file named by BREAK_MARKER exists: a bad deploy made on the fly."""

import os

import trio

if os.path.exists(os.environ["BREAK_MARKER"]):
    raise ImportError("simulated bad deploy: module is broken")


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        await stream.send_all(f"worker {worker.id}\n".encode())

    await trio.serve_listeners(handler, worker.listeners)
