"""Serves TCP: answers each connection with 'worker ID pid PID' and closes it."""

import os

import trio


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        await stream.send_all(f"worker {worker.id} pid {os.getpid()}\n".encode())

    await trio.serve_listeners(handler, worker.listeners)
