"""Across two bridged hubs: the SENDER hub's worker broadcasts COUNT messages as soon as it hears
from the receiver, says "sent", and waits to be stopped; the receiver's worker says "got all"
once every one of them arrived, in order."""

import os

import trio

COUNT = int(os.environ.get("LASTWORD_COUNT", "20000"))


async def serve(worker):
    inbox = worker.messages()
    if os.environ["LASTWORD_ROLE"] == "sender":
        async for msg in inbox:
            if msg.data == "receiver here":
                break
        for n in range(COUNT):
            await worker.broadcast(["n", n])
        print("sent", flush=True)
        await trio.sleep_forever()
    expected = 0
    while expected == 0:  # until the sender answers: it may have started after us
        await worker.broadcast("receiver here")
        with trio.move_on_after(0.5):
            async for msg in inbox:
                if isinstance(msg.data, list):
                    assert msg.data == ["n", expected], (msg.data, expected)
                    expected += 1
                    break
    async for msg in inbox:
        if isinstance(msg.data, list):
            assert msg.data == ["n", expected], (msg.data, expected)
            expected += 1
            if expected == COUNT:
                print("got all", flush=True)
