"""Total order across hubs: a barrier on hellos from WORKERS processes (on any hub), then every
worker broadcasts COUNT numbered messages and, once it has received all of them, prints what it
saw: a digest of every (seq, pid, n) in order (identical everywhere iff one order with the same
seqs), whether the seqs only grew, and whether each sender's n came 0..COUNT-1, once each, in
order."""

import json
import os

from _order_summary import summarize

WORKERS = int(os.environ["ORDER_WORKERS"])
COUNT = int(os.environ.get("ORDER_COUNT", "200"))


async def serve(worker):
    inbox = worker.messages()
    me = os.getpid()
    seen = set()
    await worker.broadcast(["hi", me])
    received = []
    async for msg in inbox:
        kind, value = msg.data
        if kind == "hi":
            if value not in seen:
                seen.add(value)
                if value != me:
                    await worker.broadcast(["hi", me])  # bounded: once per newly seen peer
                if len(seen) == WORKERS:
                    print("all here", flush=True)
                    for n in range(COUNT):
                        await worker.broadcast(["data", [me, n]])
        else:
            received.append([msg.seq, value[0], value[1]])
            if len(received) == WORKERS * COUNT:
                print("RESULT " + json.dumps(summarize(received, COUNT)), flush=True)
