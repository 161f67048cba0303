"""A pool of background workers sharing one job list, coordinated by broadcasts alone (no sockets).

    stereo run pool:serve -w 4 --app-dir examples

Every worker knows the same job list (``JOBS`` jobs numbered 1..JOBS). An idle worker broadcasts a
*claim* for the lowest job it believes is free. Claims can race, but every worker receives every
broadcast in the same total order, so every worker applies the same rule to the same sequence and
reaches the same verdict: the claim with the lowest ``seq`` wins, later claims on that job lose.
No lock, no coordinator: each worker keeps a copy of the ledger (who owns which job, which are
done) and the copies agree because they are built from the same broadcasts in the same order.

Joining late. A worker receives only the broadcasts relayed after it subscribed, so a worker that
starts (or restarts) after others have begun must first get the ledger. It broadcasts a *join*
and keeps every later message; each up-to-date worker answers the join with a *state* snapshot
"as of" the join's seq; the newcomer adopts the first such snapshot and replays the messages it
kept that came after the join. A worker whose very first message is seq 1 has seen everything
and is up to date from the start.

Crashes. A job is owned by one incarnation of a worker. When a worker dies, the master restarts it
in the same slot (same ``worker.id``); the new incarnation *takes over* the jobs its slot held and
did not finish, and runs them again. So a job is recorded done exactly once, and run more than
once only if its worker died during it. (Limits of a short example: a slot removed with SIGTTOU
in the middle of a job releases it only on a best-effort basis, and the pool needs at least one
up-to-date worker alive at all times to answer joins.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import trio

from stereo import HubClosed, Message, Worker

JOBS = 24
# Simulated I/O per job, so that the jobs spread over the workers.
WORK_SECONDS = 0.05


def compute(job: int) -> str:
    """The job itself: deterministic, so every run of a job gives the same result."""
    digest = f"job {job}".encode()
    for _ in range(1000):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:12]


@dataclass
class Ledger:
    """The replicated state. Pure: each method applies one broadcast and says what happened."""

    jobs: int
    owner: dict[int, tuple[int, str]] = field(default_factory=dict)  # job -> (slot, nonce)
    done: dict[int, tuple[int, str]] = field(default_factory=dict)  # job -> (slot, result)

    def next_free(self) -> int | None:
        for job in range(1, self.jobs + 1):
            if job not in self.owner and job not in self.done:
                return job
        return None

    def claim(self, job: int, slot: int, nonce: str) -> bool:
        if job in self.owner or job in self.done or not 1 <= job <= self.jobs:
            return False  # someone's earlier claim won
        self.owner[job] = (slot, nonce)
        return True

    def take_over(self, job: int, slot: int, nonce: str) -> bool:
        """A restarted worker inherits the unfinished job of an earlier incarnation of its slot."""
        holder = self.owner.get(job)
        if holder is None or holder[0] != slot or job in self.done:
            return False
        self.owner[job] = (slot, nonce)
        return True

    def release(self, job: int, nonce: str) -> None:
        if self.owner.get(job, (0, ""))[1] == nonce and job not in self.done:
            del self.owner[job]

    def finish(self, job: int, nonce: str, result: str) -> bool:
        holder = self.owner.get(job)
        if holder is None or holder[1] != nonce or job in self.done:
            return False  # a stale result from an incarnation that lost the job
        self.done[job] = (holder[0], result)
        return True

    @property
    def complete(self) -> bool:
        return len(self.done) == self.jobs

    def checksum(self) -> str:
        results = "".join(self.done[job][1] for job in sorted(self.done))
        return hashlib.sha256(results.encode()).hexdigest()[:12]

    def snapshot(self) -> dict[str, Any]:
        return {
            "owner": {job: list(holder) for job, holder in self.owner.items()},
            "done": {job: list(entry) for job, entry in self.done.items()},
        }

    @classmethod
    def from_snapshot(cls, jobs: int, data: dict[str, Any]) -> Ledger:
        return cls(
            jobs,
            {int(job): (int(slot), str(n)) for job, (slot, n) in data["owner"].items()},
            {int(job): (int(slot), str(r)) for job, (slot, r) in data["done"].items()},
        )


class Pool:
    """One worker's part: keep the ledger, claim work when idle, run what it won."""

    def __init__(self, worker: Worker, nursery: trio.Nursery) -> None:
        self.worker = worker
        self.nursery = nursery
        self.nonce = f"{worker.id}.{os.getpid()}.{secrets.token_hex(4)}"
        self.ledger: Ledger | None = None  # None until this worker is up to date
        self.first_seq: int | None = None
        self.join_seq: int | None = None
        self.kept: list[Message] = []  # messages after our join, replayed once we are up to date
        self.asking: int | None = None  # a job we claimed, verdict not yet seen
        self.running: int | None = None
        self.ran = 0

    async def join(self) -> None:
        await self.worker.broadcast({"pool": "join", "nonce": self.nonce})

    async def receive(self, message: Message) -> None:
        if self.first_seq is None:
            self.first_seq = message.seq
            if message.seq == 1:
                self.ledger = Ledger(JOBS)  # we have seen every broadcast there ever was
        data = message.data
        if not isinstance(data, dict) or "pool" not in data:
            return
        if self.ledger is None:
            await self._catch_up(message, data)
        else:
            await self._apply(message, data)
        await self._claim_if_idle()

    async def _catch_up(self, message: Message, data: dict[str, Any]) -> None:
        if data["pool"] == "join" and data.get("nonce") == self.nonce:
            self.join_seq = message.seq
        elif (
            data["pool"] == "state"
            and self.join_seq is not None
            and data.get("as_of") == self.join_seq
        ):
            self.ledger = Ledger.from_snapshot(JOBS, data)
            print(f"up to date: {len(self.ledger.done)} of {JOBS} jobs done", flush=True)
            if self.ledger.complete:
                self._report()
            kept, self.kept = self.kept, []
            for later in kept:
                await self._apply(later, later.data)
            await self._take_over_my_slot()
        elif self.join_seq is not None:
            self.kept.append(message)

    async def _take_over_my_slot(self) -> None:
        assert self.ledger is not None
        for job, (slot, nonce) in sorted(self.ledger.owner.items()):
            if slot == self.worker.id and nonce != self.nonce and job not in self.ledger.done:
                self.asking = job
                await self.worker.broadcast({"pool": "take_over", "job": job, "nonce": self.nonce})
                return

    async def _apply(self, message: Message, data: dict[str, Any]) -> None:
        ledger = self.ledger
        assert ledger is not None
        kind, mine = data["pool"], data.get("nonce") == self.nonce
        if kind == "join" and not mine:
            reply = {"pool": "state", "as_of": message.seq, **ledger.snapshot()}
            await self.worker.broadcast(reply)
        elif kind in ("claim", "take_over"):
            job = data["job"]
            apply = ledger.claim if kind == "claim" else ledger.take_over
            won = apply(job, message.sender, data["nonce"])
            if mine:
                self.asking = None
                if won:
                    self._start(job, "claimed" if kind == "claim" else "took over")
        elif kind == "release":
            ledger.release(data["job"], data["nonce"])
        elif kind == "done":
            job = data["job"]
            if not ledger.finish(job, data["nonce"], data["result"]):
                return
            if mine:
                self.running = None
                self.ran += 1
                print(f"job {job} done: {data['result']}", flush=True)
            if ledger.complete:
                self._report()

    def _report(self) -> None:
        assert self.ledger is not None
        print(
            f"all {JOBS} jobs done; this worker ran {self.ran}; checksum {self.ledger.checksum()}",
            flush=True,
        )

    async def _claim_if_idle(self) -> None:
        if self.ledger is None or self.running or self.asking or self.worker.stopping.is_set():
            return
        job = self.ledger.next_free()
        if job is not None:
            self.asking = job
            await self.worker.broadcast({"pool": "claim", "job": job, "nonce": self.nonce})

    def _start(self, job: int, how: str) -> None:
        self.running = job
        print(f"{how} job {job}", flush=True)
        self.nursery.start_soon(self._run, job)

    async def _run(self, job: int) -> None:
        await trio.sleep(WORK_SECONDS)
        result = compute(job)
        await self.worker.broadcast(
            {"pool": "done", "job": job, "nonce": self.nonce, "result": result}
        )

    async def release_on_stop(self) -> None:
        """Best effort: give a job back when this worker is asked to stop (e.g. SIGTTOU)."""
        await self.worker.stopping.wait()
        if self.running is not None:
            with contextlib.suppress(trio.WouldBlock, HubClosed):
                self.worker.broadcast_nowait(
                    {"pool": "release", "job": self.running, "nonce": self.nonce}
                )


async def serve(worker: Worker) -> None:
    # Subscribe before the join goes out, so that nothing after it can be missed.
    messages = worker.messages()
    async with trio.open_nursery() as nursery:
        pool = Pool(worker, nursery)
        nursery.start_soon(pool.release_on_stop)
        await pool.join()
        async for message in messages:
            await pool.receive(message)
