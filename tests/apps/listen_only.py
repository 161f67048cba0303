"""Serves TCP with trio.serve_listeners on worker.listeners and nothing else: run without --bind,
it has nothing to serve (a boot error, not a crash loop)."""

import os

import trio


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        await stream.send_all(f"worker {worker.id}\n".encode())

    await trio.serve_listeners(handler, worker.listeners)
