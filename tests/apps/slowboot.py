"""Boots slowly (at import) while the file named by SLOWBOOT_MARKER exists."""

import os
import time

import trio

if os.path.exists(os.environ["SLOWBOOT_MARKER"]):
    time.sleep(1.0)  # a slow import: the process stays STARTING meanwhile


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    await trio.sleep_forever()
