"""Closes its own hub descriptor, as an app that closes descriptors it does not know can do
(only its first process: HUBCLOSE_MARKER). Later processes just run."""

import os

import trio
from _once import first_time


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    if first_time(os.environ["HUBCLOSE_MARKER"]):
        os.close(worker._hub_sock.fileno())
        print("closed the hub descriptor", flush=True)
    await trio.sleep_forever()
