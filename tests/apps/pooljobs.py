"""A worker app for tests/test_pool.py: runs the job pool scenario named by POOL_SCENARIO and
prints ``RESULT {json}`` lines; the jobs are the functions below (imported by the pool processes
from this module, as an app's own would be)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import trio
import trio.testing

import stereo
from stereo import PoolError, PoolProcessDied, RemoteTraceback

MAX_IN_FLIGHT = 64  # stereo.pool.client.MAX_OUTSTANDING, per pool process


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def pid() -> int:
    return os.getpid()


def fail(text: str) -> None:
    raise ValueError(text)


class Unpicklable(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()  # a lock cannot be pickled


def fail_unpicklable() -> None:
    raise Unpicklable("with a lock inside")


def gated(path: str) -> str:
    """Blocks its pool process until someone writes to the FIFO ``path``."""
    print(f"gated pid={os.getpid()}", flush=True)
    with open(path) as fifo:
        return fifo.read()


def doomed(path: str, suicide: bool) -> str:
    """Like :func:`gated`; released, it kills its own pool process if ``suicide``."""
    print(f"gated pid={os.getpid()}", flush=True)
    with open(path) as fifo:
        text = fifo.read()
    if suicide:
        os.kill(os.getpid(), signal.SIGKILL)
    return text


def record(path: str, text: str) -> str:
    with open(path, "a") as log:
        log.write(text + "\n")
    return text


def nap(value: int) -> int:
    time.sleep(0.001)  # a job that takes a little while, so jobs are in flight when we scale
    return value


def logged(path: str, tag: str) -> str:
    """Leaves a start and an end line in ``path`` (with its pid) around a millisecond of work."""
    with open(path, "a") as log:  # O_APPEND: a short line is written whole
        log.write(f"start {tag} {os.getpid()}\n")
    print(f"start {tag} pid={os.getpid()}", flush=True)
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    with open(path, "a") as log:
        log.write(f"end {tag} {os.getpid()}\n")
    return tag


def report(**fields: Any) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


async def release(path: str, text: str = "go") -> None:
    def write() -> None:
        with open(path, "w") as fifo:
            fifo.write(text)

    await trio.to_thread.run_sync(write)


async def roundtrip(worker: stereo.Worker, tmp: str) -> None:
    total = await worker.run_sync(add, 2, 3, scale=10)
    pids: set[int] = set()

    async def one() -> None:
        pids.add(await worker.run_sync(pid))

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(one)
    pdf = {await worker.run_sync(pid, pool="pdf") for _ in range(10)}
    await worker.run_sync(print, "a job of pool pdf", flush=True, pool="pdf")
    try:
        await worker.run_sync(fail, "bad input")
    except ValueError as exc:
        cause = exc.__cause__
        remote = cause.text if isinstance(cause, RemoteTraceback) else ""
        error = f"{type(exc).__name__}: {exc}"
    try:
        await worker.run_sync(fail_unpicklable)
    except PoolError as exc:
        unpicklable = str(exc)
    try:
        await worker.run_sync(add, 1, 2, pool="nope")
    except PoolError as exc:
        unknown = str(exc)
    report(
        total=total,
        pids=sorted(pids),
        pdf=sorted(pdf),
        error=error,
        remote=remote,
        unpicklable=unpicklable,
        unknown=unknown,
        worker_pid=os.getpid(),
    )


async def killmid(worker: stereo.Worker, tmp: str) -> None:
    gate = os.path.join(tmp, "gate")
    os.mkfifo(gate)
    outcome: dict[str, Any] = {}

    async def first() -> None:
        try:
            await worker.run_sync(gated, gate)
            outcome["first"] = "returned"
        except PoolProcessDied as exc:
            outcome["first"] = f"PoolProcessDied: {exc}"

    async def later(name: str) -> None:
        outcome[name] = await worker.run_sync(pid)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(later, "second")
        nursery.start_soon(later, "third")
    report(**outcome)


async def cancel(worker: stereo.Worker, tmp: str) -> None:
    log = os.path.join(tmp, "log")
    gate = os.path.join(tmp, "gate")
    os.mkfifo(gate)
    # 1. A job cancelled while queued behind a running one never runs.
    messages = worker.messages()
    queued = trio.CancelScope()

    async def queued_job() -> None:
        with queued:
            await worker.run_sync(record, log, "queued")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run_sync, gated, gate)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(queued_job)
        await trio.testing.wait_all_tasks_blocked()  # sent, and queued behind the gated job
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()  # its CANCEL is in our outbox
        # Our own broadcast comes back after the master relayed what we sent before it: the
        # CANCEL has reached the pool process's socket when we release the running job.
        await worker.broadcast("echo")
        async for message in messages:
            if message.data == "echo":
                break
        await release(gate)
    await worker.run_sync(record, log, "after")
    with open(log) as file:
        ran = file.read().split()
    # 2. kill_on_cancel: a running job's pool process is killed (and replaced).
    before = await worker.run_sync(pid)
    gate2 = os.path.join(tmp, "gate2")
    os.mkfifo(gate2)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as running:
            nursery.start_soon(wait_for_cancel, worker, running)
            await worker.run_sync(gated, gate2, kill_on_cancel=True)
        nursery.cancel_scope.cancel()
    after = await worker.run_sync(pid)
    report(ran=ran, killed=running.cancelled_caught, before=before, after=after)


async def wait_for_cancel(worker: stereo.Worker, scope: trio.CancelScope) -> None:
    print("waiting for cancel", flush=True)
    async for message in worker.messages():
        if message.data == "cancel":
            scope.cancel()
            return


async def flood(worker: stereo.Worker, tmp: str) -> None:
    gate = os.path.join(tmp, "gate")
    os.mkfifo(gate)
    results: list[int] = []

    async def one(value: int) -> None:
        results.append(await worker.run_sync(add, value, 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run_sync, gated, gate)
        await trio.testing.wait_all_tasks_blocked()
        for value in range(5000):
            nursery.start_soon(one, value)
        await trio.testing.wait_all_tasks_blocked()
        in_flight = sum(len(t.jobs) for t in worker.jobs._targets.values())
        nursery.start_soon(release, gate)
    report(in_flight=in_flight, done=len(results), correct=sorted(results) == list(range(1, 5001)))


async def scale(worker: stereo.Worker, tmp: str) -> None:
    done = 0
    wrong = 0
    errors: list[str] = []
    pids: set[int] = set()
    stop = trio.Event()

    async def caller(index: int) -> None:
        nonlocal done, wrong
        value = index
        while not stop.is_set():
            try:
                got = await worker.run_sync(nap, value)
            except Exception as exc:
                errors.append(repr(exc))
                continue
            wrong += got != value
            done += 1
            value += 64
            if done == 200:
                print("load running", flush=True)

    async def watch() -> None:
        while not stop.is_set():
            pids.update(t.pid for t in worker.jobs._targets.values())
            await trio.sleep(0.05)  # sampling who serves, not synchronising

    async with trio.open_nursery() as nursery:
        for index in range(64):
            nursery.start_soon(caller, index)
        nursery.start_soon(watch)
        async for message in worker.messages():
            if message.data == "stop":
                stop.set()
                break
    report(done=done, wrong=wrong, errors=errors[:5], pool_pids=len(pids))


async def until(worker: stereo.Worker, text: str) -> None:
    """Wait for the broadcast ``text`` (from the test, by `stereo ctl broadcast`)."""
    async for message in worker.messages():
        if message.data == text:
            return


async def flushed(worker: stereo.Worker, messages: Any) -> None:
    """Our own broadcast comes back after the master relayed every frame we sent before it:
    our job frames have reached the pool process's socket."""
    await worker.broadcast(f"echo {worker.id}")
    async for message in messages:
        if message.data == f"echo {worker.id}":
            return


async def shared(worker: stereo.Worker, tmp: str) -> None:
    """-w 2 --pool 1: worker 1's job runs (and dies), worker 2's jobs are queued behind it."""
    if worker.id == 1:
        gate = os.path.join(tmp, "gate")
        os.mkfifo(gate)
        try:
            first = await worker.run_sync(doomed, gate, os.environ["POOL_SUICIDE"] == "1")
        except PoolProcessDied as exc:
            first = f"PoolProcessDied: {exc}"
        report(role="A", first=first)
        return
    messages = worker.messages()
    await until(worker, "queue")
    pids: list[int] = []
    errors: list[str] = []

    async def one() -> None:
        try:
            pids.append(await worker.run_sync(pid))
        except Exception as exc:
            errors.append(repr(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        await flushed(worker, messages)
        print("B queued", flush=True)
    report(role="B", pids=pids, errors=errors)


async def killprecise(worker: stereo.Worker, tmp: str) -> None:
    """-w 2 --pool 1: worker 2's job runs; worker 1 cancels, with kill_on_cancel, its own job
    queued behind it (its oldest there): the pool process must not be killed."""
    log = os.path.join(tmp, "log")
    if worker.id == 2:
        gate = os.path.join(tmp, "gate")
        os.mkfifo(gate)
        try:
            first = await worker.run_sync(gated, gate)
        except PoolProcessDied as exc:
            first = f"PoolProcessDied: {exc}"
        report(role="B", first=first, after=await worker.run_sync(pid))
        return
    messages = worker.messages()
    await until(worker, "queue")
    scope = trio.CancelScope()

    async def queued_job() -> None:
        with scope:
            await worker.run_sync(record, log, "q", kill_on_cancel=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queued_job)
        await trio.testing.wait_all_tasks_blocked()  # sent, queued behind worker 2's
        scope.cancel()
    await flushed(worker, messages)  # its CANCEL has reached the pool process
    print("A cancelled", flush=True)
    after = await worker.run_sync(pid)  # queued behind the cancelled one: it ran or not before
    ran = trio.Path(log)
    report(role="A", ran=(await ran.read_text()).split() if await ran.exists() else [], after=after)


async def chaos(worker: stereo.Worker, tmp: str) -> None:
    """-w 2 --pool 2, while the test kills pool processes: 300 jobs per worker."""
    log = os.path.join(tmp, "log")
    ok: list[str] = []
    died: list[str] = []
    errors: list[str] = []

    async def caller(index: int) -> None:
        for n in range(index, 300, 16):
            tag = f"{worker.id}-{n}"
            try:
                ok.append(await worker.run_sync(logged, log, tag))
            except PoolProcessDied:
                died.append(tag)
            except Exception as exc:
                errors.append(repr(exc))

    async with trio.open_nursery() as nursery:
        for index in range(16):
            nursery.start_soon(caller, index)
    report(role=str(worker.id), ok=ok, died=died, errors=errors[:5])


SCENARIOS = {
    "chaos": chaos,
    "shared": shared,
    "killprecise": killprecise,
    "roundtrip": roundtrip,
    "killmid": killmid,
    "cancel": cancel,
    "flood": flood,
    "scale": scale,
}


async def serve(worker: stereo.Worker) -> None:
    await SCENARIOS[os.environ["POOL_SCENARIO"]](worker, os.environ["POOL_TMP"])
    await trio.sleep_forever()
