"""The caller's side of the job pool, inside every worker: ``await worker.run_sync(fn, ...)``.

The caller chooses: each job goes to the pool process with the fewest jobs this worker has
outstanding there, pipelined (up to :data:`MAX_OUTSTANDING` jobs and :data:`MAX_OUTSTANDING_BYTES`
per pool process; past that ``run_sync`` waits, which bounds memory however many tasks call).
A pool process tells a job's caller when it starts the job (STARTED, or a flag on the answer
before), so when it dies the caller knows which of its jobs there was running: that one fails
with PoolProcessDied, the others never started and are sent again. A job that came back
BOUNCED never reached a pool process and is sent again too. See docs/pool.md.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import cbor2
import trio

from ..errors import (
    EncodeError,
    MessageTooLarge,
    PoolError,
    PoolProcessDied,
    ProtocolError,
    RemoteTraceback,
)
from ..outbox import Outbox
from ..wire.jobs import JOB_OVERHEAD, NEXT_IS_YOURS, Op, decode_job, encode_job
from ..wire.protocol import Kind, max_body_size

T = TypeVar("T")

MAX_OUTSTANDING = 64  # jobs this worker keeps in flight at one pool process
MAX_OUTSTANDING_BYTES = 4 * 1024 * 1024  # their pickled bytes (a first job may be bigger)
DEFAULT_POOL = "default"


class _Target:
    """One pool process as this worker sees it: its address, the jobs it owes us, and which
    of them it said it is running."""

    __slots__ = ("address", "bytes", "jobs", "leaving", "order", "pid", "pool", "running")

    def __init__(self, address: int, pid: int, pool: str) -> None:
        self.address = address
        self.pid = pid
        self.pool = pool
        self.jobs: dict[int, _Job] = {}
        self.bytes = 0
        self.leaving = False
        self.running: _Job | None = None
        # Our jobs in the order they were sent here (answered ones are dropped lazily): the
        # order it runs them in, for an answer flagged NEXT_IS_YOURS.
        self.order: deque[_Job] = deque()

    def next_job(self) -> _Job | None:
        """Our oldest job here that is sent and unanswered."""
        order, jobs = self.order, self.jobs
        while order and jobs.get(order[0].id) is not order[0]:
            order.popleft()
        return order[0] if order else None

    def has_room(self, size: int) -> bool:
        return not self.jobs or (
            len(self.jobs) < MAX_OUTSTANDING and self.bytes + size <= MAX_OUTSTANDING_BYTES
        )


class _Job:
    __slots__ = (
        "abandoned",
        "body",
        "done",
        "error",
        "id",
        "kill",
        "op",
        "reply",
        "retry",
        "sent",
        "target",
    )

    def __init__(self, job_id: int, body: bytes) -> None:
        self.id = job_id
        self.body = body
        self.target: _Target | None = None
        self.done = trio.Event()
        self.op = 0
        self.reply = b""
        self.error: BaseException | None = None  # raised instead of an answer
        self.abandoned = False  # its caller was cancelled and left
        self.kill = False  # ... with kill_on_cancel: kill its pool process if it starts
        self.sent = 0  # when its frame went into the outbox, in sends (0: waiting for room)
        self.retry = False  # it never ran: send it again


class PoolClient:
    def __init__(self, outbox: Outbox, max_message_size: int) -> None:
        self._outbox = outbox
        self._max_body = max_body_size(max_message_size) - JOB_OVERHEAD
        self.pools: set[str] | None = None  # the pools the master runs (None: not told yet)
        self._targets: dict[int, _Target] = {}
        self._jobs: dict[int, _Job] = {}
        self._next_id = 1
        self._sends = 0
        self._changed = trio.Event()  # room freed or pool processes changed, for waiters
        self._waiting = 0

    # -- the app's call ------------------------------------------------------------------------

    async def run_sync(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        pool: str = DEFAULT_POOL,
        kill_on_cancel: bool = False,
    ) -> T:
        if self.pools is not None and pool not in self.pools:
            known = ", ".join(sorted(self.pools)) or "none"
            raise PoolError(f"there is no job pool {pool!r} (--pool; running: {known})")
        try:
            body = pickle.dumps((fn, args, kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise EncodeError(f"cannot pickle the job for {fn!r}: {exc}") from exc
        if len(body) > self._max_body:
            raise MessageTooLarge(
                f"the job pickles to {len(body)} bytes; the limit is {self._max_body}"
                " (--max-message-size)"
            )
        job = _Job(self._next_id, body)
        self._next_id += 1
        self._jobs[job.id] = job
        try:
            while True:
                target = await self._place(job, pool)
                frame = encode_job(target.address, Op.JOB, job.id, body)
                if not self._outbox.offer(frame):
                    await self._outbox.wait_for_room(len(frame))
                    self._outbox.send(frame)
                self._sends += 1
                job.sent = self._sends
                if job.target is target:  # not already answered BOUNCED or died there
                    target.order.append(job)
                    if len(target.order) > 2 * MAX_OUTSTANDING:
                        _prune(target)
                await job.done.wait()
                if not job.retry:
                    result: T = self._outcome(job)
                    return result
                job.retry, job.sent, job.done = False, 0, trio.Event()
        except trio.Cancelled:
            self._cancel(job, kill_on_cancel)
            raise
        finally:
            if not self._holds(job):
                self._jobs.pop(job.id, None)

    async def _place(self, job: _Job, pool: str) -> _Target:
        """Pick the pool process with the fewest of our jobs; wait while none has room."""
        size = len(job.body)
        while True:
            best: _Target | None = None
            for target in self._targets.values():
                if (
                    target.pool == pool
                    and not target.leaving
                    and target.has_room(size)
                    and (best is None or len(target.jobs) < len(best.jobs))
                ):
                    best = target
            if best is not None:
                job.target = best
                best.jobs[job.id] = job
                best.bytes += size
                return best
            if self._outbox.error is not None:
                raise self._outbox.error
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1

    def _outcome(self, job: _Job) -> Any:
        if job.error is not None:
            raise job.error
        if job.op == Op.RESULT:
            return pickle.loads(job.reply)
        if job.op == Op.ERROR:
            exc, text, remote = pickle.loads(job.reply)
            if not isinstance(exc, BaseException):
                exc = PoolError(f"the job raised {text}, which cannot be pickled")
            exc.__cause__ = RemoteTraceback(remote)
            raise exc
        raise PoolError("the job was cancelled")

    def _holds(self, job: _Job) -> bool:
        """Still owed an answer (a cancelled job keeps its place until the pool answers)."""
        return job.target is not None and job.id in job.target.jobs

    def _cancel(self, job: _Job, kill: bool) -> None:
        target = job.target
        if target is None or job.id not in target.jobs:
            return  # not placed yet, or already answered
        if not job.sent:  # cancelled while waiting for room in our outbox: it never left
            self._release(target, job)
            return
        job.abandoned = True
        job.kill = kill
        if kill and target.running is job:
            _kill(target)
            return
        # Queued there (or running, without kill_on_cancel): the pool skips it if it has not
        # started; its answer, whichever, frees its place. If it starts before the CANCEL
        # arrives, its STARTED kills the process (kill_on_cancel).
        self._outbox.send(encode_job(target.address, Op.CANCEL, job.id))

    # -- frames from the hub (called by the worker's reader, no checkpoints) ---------------------

    def receive_frame(self, kind: int, body: bytes) -> None:
        try:
            if kind == Kind.MEMBERS:
                self._members(cbor2.loads(body))
            elif kind == Kind.DIRECT:
                self._answer(decode_job(body))
            elif kind == Kind.BOUNCED:
                self._bounced(decode_job(body))
        except (ProtocolError, ValueError, TypeError, KeyError, cbor2.CBORDecodeError):
            pass  # not from a pool process of ours (only a misbehaving worker sends such)

    def _answer(self, frame: Any) -> None:
        target = self._targets.get(frame.peer)
        if target is None:
            return
        job = self._jobs.get(frame.job)
        if job is None or job.target is not target:
            return
        op = frame.op
        if op == Op.STARTED:
            self._started(target, job)
            return
        if target.running is job:
            target.running = None
        job.op, job.reply = op & ~NEXT_IS_YOURS, frame.body  # CANCELLED: its caller has left
        self._finish(target, job)
        if op & NEXT_IS_YOURS:
            following = target.next_job()
            if following is not None:
                self._started(target, following)

    def _started(self, target: _Target, job: _Job) -> None:
        target.running = job
        if job.kill:  # cancelled with kill_on_cancel, and its CANCEL came too late
            _kill(target)

    def _bounced(self, frame: Any) -> None:
        """A job that never reached its pool process (gone, or leaving): send it again."""
        job = self._jobs.get(frame.job)
        if frame.op != Op.JOB or job is None or job.target is None:
            return
        if job.target.address == frame.peer:  # not already sent again elsewhere
            self._release(job.target, job)
            job.retry = True
            self._finish(None, job)

    def _members(self, notice: dict[str, Any]) -> None:
        pools = notice.get("pools", {})
        listed: set[int] = set()
        for name, members in pools.items():
            for address, pid in members:
                listed.add(address)
                if address not in self._targets:
                    self._targets[address] = _Target(address, pid, str(name))
        for address in notice.get("dead", []):
            self._died(address)
        for address in notice.get("drained", []):
            target = self._targets.pop(address, None)
            if target is not None:
                target.leaving = True  # its jobs sent after END are coming back BOUNCED
        for target in self._targets.values():
            if target.address not in listed:
                target.leaving = True
        self._wake()

    def _died(self, address: int) -> None:
        target = self._targets.pop(address, None)
        if target is None:
            return
        target.leaving = True
        for job in list(target.jobs.values()):
            if job is target.running:  # it said so before starting it
                job.error = PoolProcessDied(
                    f"pool process {target.pid} died while it was running this job"
                )
            else:  # it never started: the pool process says so before it starts one
                job.retry = True
            self._finish(target, job)

    def _finish(self, target: _Target | None, job: _Job) -> None:
        """Wake the job's caller (a cancelled one has left: forget the job)."""
        if target is not None:
            self._release(target, job)
        if job.abandoned:
            self._jobs.pop(job.id, None)
        job.done.set()

    def _release(self, target: _Target, job: _Job) -> None:
        if target.jobs.pop(job.id, None) is not None:
            target.bytes -= len(job.body)
        job.target = None
        self._wake()

    def _wake(self) -> None:
        if self._waiting:
            self._changed.set()
            self._changed = trio.Event()


def _kill(target: _Target) -> None:
    """kill_on_cancel: its death notice sends our other jobs there again (the cancelled one
    is not failed: its caller has left)."""
    if target.pid:
        try:
            os.kill(target.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _prune(target: _Target) -> None:
    """Drop answered jobs from the send order (cancelled ones are answered out of order)."""
    target.order = deque(job for job in target.order if target.jobs.get(job.id) is job)
