"""A request that stays in flight until the client says 'finish', to observe graceful drain."""

import os

import trio


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        buffer = b""
        while not buffer.endswith(b"\n"):
            data = await stream.receive_some(1024)
            if not data:
                return
            buffer += data
        print(f"in flight: {buffer.decode().strip()}", flush=True)
        buffer = b""
        while not buffer.endswith(b"\n"):
            data = await stream.receive_some(1024)
            if not data:
                return
            buffer += data
        await stream.send_all(b"done by worker %d\n" % worker.id)
        print("request finished", flush=True)

    await trio.serve_listeners(handler, worker.listeners)
