"""Broadcasts at a rate that rises and falls (a sine, a different phase per worker) and reads
everything: traffic for the dashboard's charts (tests/dashboard_screenshot.py)."""

import math
import os

import trio

BASE_RATE = 150  # broadcasts a second per worker, on average


async def _read(messages):
    async for _ in messages:
        pass


async def serve(worker):
    messages = worker.messages()
    print(f"ticking pid={os.getpid()}", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, messages)
        start = trio.current_time()
        while True:
            elapsed = trio.current_time() - start
            rate = BASE_RATE * (1.1 + math.sin(elapsed / 6 + worker.id))
            await worker.broadcast({"from": worker.id, "at": elapsed})
            await trio.sleep(1 / rate)
