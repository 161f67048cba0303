"""Worker 1's first process writes garbage to its hub connection; everyone reports hellos."""

import os

MARKER = os.environ["GARBAGE_MARKER"]


async def serve(worker):
    inbox = worker.messages()
    print(f"started pid={os.getpid()}", flush=True)
    if worker.id == 1 and not os.path.exists(MARKER):
        open(MARKER, "w").close()
        garbage = os.environ.get("GARBAGE_BYTES", "\xff" * 64).encode("latin-1")
        # Misbehaving on purpose needs the raw hub connection, which the worker keeps in a private
        # attribute: a test app may reach for it, an app never should.
        os.write(worker._hub_sock.fileno(), garbage)
    await worker.broadcast(["hello", worker.id, os.getpid()])
    async for msg in inbox:
        print(f"saw {msg.data[0]} from {msg.data[1]} pid={msg.data[2]}", flush=True)
