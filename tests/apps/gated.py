"""An app whose import waits at a gate: its first process (GATED_MARKER) prints 'importing' and
blocks until a byte arrives in the FIFO GATED_FIFO; later processes import at once. serve() says
so and serves nothing."""

import os

import trio
from _once import first_time

if first_time(os.environ["GATED_MARKER"]):
    # O_RDWR: the open does not wait for a writer, and the read waits for a byte (not for EOF).
    gate = os.open(os.environ["GATED_FIFO"], os.O_RDWR)
    print(f"importing pid={os.getpid()}", flush=True)
    os.read(gate, 1)
    os.close(gate)


async def serve(worker):
    print(f"serving pid={os.getpid()}", flush=True)
    await trio.sleep_forever()
