"""Large broadcasts into a worker with one iterator it never reads.

Worker 1's first process (BIGFLOOD_MARKER) subscribes twice: one iterator it never reads, and one
it reads, printing after each batch how much it received and its peak resident memory (VmHWM,
KiB). Worker 2, once worker 1 is subscribed, broadcasts BIGFLOOD_COUNT payloads of BIGFLOOD_SIZE
bytes, paced by its own broadcasts coming back (at most WINDOW under way), so that it keeps up
with its echoes whatever happens to worker 1. Later processes only run.
"""

import os

import trio
from _once import first_time

COUNT = int(os.environ["BIGFLOOD_COUNT"])
SIZE = int(os.environ["BIGFLOOD_SIZE"])
WINDOW = 4


def peak_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    if worker.id == 1 and first_time(os.environ["BIGFLOOD_MARKER"]):
        await hold_and_watch(worker)
    elif worker.id == 2:
        await flood(worker)
    await trio.sleep_forever()


async def hold_and_watch(worker):
    never_read = worker.messages()  # noqa: F841 (kept open on purpose)
    watched = worker.messages()
    print(f"subscribed hwm_kib={peak_kib()}", flush=True)
    await worker.broadcast("subscribed")
    received = 0
    async for batch in watched.batches():
        for message in batch:
            if message.data == "flooder here":
                await worker.broadcast("subscribed")
            elif isinstance(message.data, bytes):
                received += len(message.data)
        print(f"received {received} hwm_kib={peak_kib()}", flush=True)


async def flood(worker):
    inbox = worker.messages()
    await worker.broadcast("flooder here")
    async for message in inbox:
        if message.data == "subscribed":
            break
    payload = b"x" * SIZE
    echoed = 0
    for sent in range(1, COUNT + 1):
        await worker.broadcast(payload)
        while sent - echoed >= WINDOW:
            message = await inbox.__anext__()
            echoed += message.sender == worker.id and isinstance(message.data, bytes)
    print("flood sent", flush=True)
    async for _ in inbox:
        pass
