"""Worker 1 broadcasts a last word and returns at once: the word must still reach worker 2."""

import os

import trio


async def serve(worker):
    inbox = worker.messages()
    marker = os.environ["LASTWORD_MARKER"]
    if worker.id == 1:
        if os.path.exists(marker):
            await trio.sleep_forever()  # the respawned worker 1 stays quiet
        await worker.broadcast("w1 here")  # in case worker 2 started first
        async for msg in inbox:
            if msg.data == "w2 up":
                break
        open(marker, "w").close()
        await worker.broadcast("last word")
        return
    await worker.broadcast("w2 up")  # in case worker 1 started first
    async for msg in inbox:
        if msg.data == "w1 here":
            await worker.broadcast("w2 up")
        print(f"got {msg.data}", flush=True)
