"""Worker 1's first process misbehaves on its hub connection, as FUZZ_MODE says:

- ``random``: FUZZ_SIZE bytes from random.Random(FUZZ_SEED);
- ``truncated``: the start of a BROADCAST frame (prefix announcing more than is sent), then it
  shuts its side of the connection down (EOF for the master) and waits.

Every process broadcasts a hello and prints each hello it sees, so the tests can tell that the
relay and the other workers carried on.
"""

import os
import random
import socket
import struct

from _once import first_time

MARKER = os.environ["FUZZ_MARKER"]
MODE = os.environ["FUZZ_MODE"]


async def serve(worker):
    inbox = worker.messages()
    print(f"started pid={os.getpid()}", flush=True)
    if worker.id == 1 and first_time(MARKER):
        # Misbehaving on purpose needs the raw hub connection, which the worker keeps in a private
        # attribute: a test app may reach for it, an app never should.
        hub = worker._hub_sock
        if MODE == "random":
            rng = random.Random(int(os.environ["FUZZ_SEED"]))
            size = int(os.environ.get("FUZZ_SIZE", "4096"))
            data = bytes(rng.getrandbits(8) for _ in range(size))
            os.write(hub.fileno(), data)
        elif MODE == "truncated":
            # A BROADCAST announcing 100 body bytes, of which 20 arrive; then EOF.
            os.write(hub.fileno(), struct.pack(">IB", 101, 0x05) + b"\0" * 20)
            hub.shutdown(socket.SHUT_WR)
        print("misbehaved", flush=True)
    await worker.broadcast(["hello", worker.id, os.getpid()])
    async for msg in inbox:
        print(f"saw {msg.data[0]} from {msg.data[1]} pid={msg.data[2]}", flush=True)
