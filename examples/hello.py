# examples/hello.py
import trio


async def serve(worker):
    inbox = worker.messages()  # subscribe before broadcasting
    await worker.broadcast(f"worker {worker.id} is up")

    async def handle(stream):
        async with stream:
            await stream.send_all(f"hello from worker {worker.id}\n".encode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, worker.listeners)
        async for msg in inbox:  # every broadcast, in one order everywhere
            print(f"seq {msg.seq} from worker {msg.sender}: {msg.data}", flush=True)
