"""Total-order probe: a barrier on hellos, then every worker broadcasts COUNT numbered messages
and prints the (seq, sender, n) of every data message it received, once it has all of them."""

import json
import os

WORKERS = int(os.environ["ORDER_WORKERS"])
COUNT = int(os.environ.get("ORDER_COUNT", "200"))


async def serve(worker):
    inbox = worker.messages()
    seen = set()
    await worker.broadcast(["hi", worker.id])
    received = []
    async for msg in inbox:
        kind, value = msg.data
        if kind == "hi":
            if value not in seen:
                seen.add(value)
                if value != worker.id:
                    # Tell a newcomer about us; bounded: once per newly seen peer.
                    await worker.broadcast(["hi", worker.id])
                if len(seen) == WORKERS:
                    for n in range(COUNT):
                        await worker.broadcast(["data", n])
        else:
            received.append([msg.seq, msg.sender, value])
            if len(received) == WORKERS * COUNT:
                print("RESULT " + json.dumps(received), flush=True)
