"""Topic probe: after a barrier on hellos, every worker publishes COUNT events on "a" and on
"b", interleaved, and prints the (seq, sender, n) of every "a" event its subscriber received.
Worker 1 also keeps a subscription with limit 5 that it never reads until the end, and prints
what that one gave before it was cut off."""

import json
import os

import stereo

WORKERS = int(os.environ["TOPIC_WORKERS"])
COUNT = int(os.environ.get("TOPIC_COUNT", "100"))


async def serve(worker):
    assert stereo.current_worker() is worker
    inbox = worker.messages()
    async with stereo.subscribe("a") as sub, stereo.subscribe("a", limit=5) as lagging:
        seen = set()
        await worker.broadcast(["hi", worker.id])
        async for msg in inbox:
            if isinstance(msg.data, list) and msg.data[0] == "hi" and msg.data[1] not in seen:
                seen.add(msg.data[1])
                if msg.data[1] != worker.id:
                    await worker.broadcast(["hi", worker.id])
                if len(seen) == WORKERS:
                    break
        inbox.close()
        for n in range(COUNT):
            await stereo.publish("a", n)
            await stereo.publish("b", -n)
        received = []
        async for event in sub:
            assert event.channel == "a"
            received.append([event.seq, event.sender, event.message])
            if len(received) == WORKERS * COUNT:
                break
        print("RESULT " + json.dumps(received), flush=True)
        if worker.id == 1:
            kept = []
            try:
                async for event in lagging:
                    kept.append(event.message)
            except stereo.SubscriberCutOff as exc:
                print("CUTOFF " + json.dumps({"kept": len(kept), "error": str(exc)}), flush=True)
