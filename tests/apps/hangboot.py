"""Hangs at import (never becomes ready) while the file named by HANGBOOT_MARKER exists. Says
`booting pid=P` first, so a test knows the process is there and hanging."""

import os
import time

import trio

print(f"booting pid={os.getpid()}", flush=True)
while os.path.exists(os.environ["HANGBOOT_MARKER"]):
    time.sleep(0.05)  # an import that waits on something that never comes


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    await trio.sleep_forever()
