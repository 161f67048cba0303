"""A worker that prints a lot while its trio loop (and so its heartbeat) keeps running.

Every worker connects to the unix socket CHATTY_SOCKET and says ``hello ID PID``. Worker 1 then
waits for ``go``, prints numbered lines (``flood N``, 100 per print) as fast as its stdout takes
them until it printed CHATTY_BYTES bytes, then a burst every 10 ms until CHATTY_SECONDS passed
since ``go``, and reports ``done COUNT``. A print that blocks (the master not draining its pipe)
blocks its loop, so its heartbeats stop.
"""

import os

import trio

SOCKET = os.environ["CHATTY_SOCKET"]
BYTES = int(os.environ.get("CHATTY_BYTES", str(8 * 1024 * 1024)))
SECONDS = float(os.environ.get("CHATTY_SECONDS", "4"))
PAD = "x" * 80
BURST = 100


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    stream = await trio.open_unix_socket(SOCKET)
    await stream.send_all(f"hello {worker.id} {os.getpid()}\n".encode())
    if worker.id != 1:
        await trio.sleep_forever()
    assert await stream.receive_some() == b"go\n"
    deadline = trio.current_time() + SECONDS
    count = printed = 0
    while printed < BYTES or trio.current_time() < deadline:
        block = "\n".join(f"flood {n} {PAD}" for n in range(count, count + BURST))
        print(block, flush=True)
        count += BURST
        printed += len(block) + 1
        await trio.sleep(0 if printed < BYTES else 0.01)
    await stream.send_all(f"done {count}\n".encode())
    await trio.sleep_forever()
