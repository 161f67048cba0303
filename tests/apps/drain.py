"""A request that stays in flight until the client says 'finish', to observe graceful drain."""

import os

import trio


async def read_line(stream) -> bytes | None:
    buffer = b""
    while not buffer.endswith(b"\n"):
        data = await stream.receive_some(1024)
        if not data:
            return None
        buffer += data
    return buffer


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)

    async def handler(stream):
        request = await read_line(stream)
        if request is None:
            return
        print(f"in flight: {request.decode().strip()}", flush=True)
        if await read_line(stream) is None:
            return
        await stream.send_all(b"done by worker %d\n" % worker.id)
        print("request finished", flush=True)

    await trio.serve_listeners(handler, worker.listeners)
