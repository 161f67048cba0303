"""Rounds of broadcasts across bridged hubs, for fault tests: a test can start a round when it
chooses (a console broadcast ``["go", ROUND]``), hold a fault during it, and start another one
after a RESET has restarted the workers.

Every worker says ``["hi", pid]`` at start and again whenever it meets a new pid, and prints
``all here`` once it has met WORKERS pids (itself included): restarted workers meet the others
again this way. On ``["go", ROUND]`` it broadcasts COUNT messages ``["data", [pid, ROUND, n]]``,
one every PACE seconds (so that a fault lands in the middle of a round). It prints every data
message it receives (``got ROUND SEQ SENDER N RECEIVER`` if it took part in the round from its
go, for the test to check what was delivered before a fault; ``late`` instead of ``got`` for a
worker started after the go, which sees only the round's tail) and, once WORKERS senders' COUNT
messages of a round have arrived, ``RESULT`` with a digest of that round's (seq, sender, n) list
in the order received, whether the seqs only grew, and whether each sender's n came
0..COUNT-1, once each, in order.
"""

import json
import os

import trio
from _order_summary import summarize

WORKERS = int(os.environ["FAULT_WORKERS"])
COUNT = int(os.environ.get("FAULT_COUNT", "50"))
PACE = float(os.environ.get("FAULT_PACE", "0"))


async def storm(worker, me, round_):
    print(f"storm {round_}", flush=True)
    for n in range(COUNT):
        await worker.broadcast(["data", [me, round_, n]])
        if PACE:
            await trio.sleep(PACE)


async def serve(worker):
    inbox = worker.messages()
    me = os.getpid()
    seen = set()
    rounds = {}  # round -> [[seq, sender, n], ...] in the order received
    reported = set()
    started = set()  # rounds whose go this process received
    async with trio.open_nursery() as nursery:
        await worker.broadcast(["hi", me])
        async for msg in inbox:
            kind, value = msg.data
            if kind == "hi":
                if value not in seen:
                    seen.add(value)
                    if value != me:
                        await worker.broadcast(["hi", me])  # bounded: once per new pid
                    if len(seen) == WORKERS:
                        print("all here", flush=True)
            elif kind == "go":
                started.add(value)
                nursery.start_soon(storm, worker, me, value)
            elif kind == "data":
                sender, round_, n = value
                tag = "got" if round_ in started else "late"
                print(f"{tag} {round_} {msg.seq} {sender} {n} {me}", flush=True)
                received = rounds.setdefault(round_, [])
                received.append([msg.seq, sender, n])
                per_sender = {}
                for _, pid, _ in received:
                    per_sender[pid] = per_sender.get(pid, 0) + 1
                complete = [pid for pid, got in per_sender.items() if got >= COUNT]
                if len(complete) == WORKERS and round_ not in reported:
                    reported.add(round_)
                    summary = {"round": round_, **summarize(received, COUNT)}
                    print("RESULT " + json.dumps(summary), flush=True)
