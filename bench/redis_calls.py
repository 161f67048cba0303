"""``python -m bench.redis_calls``: what one Redis call costs the bridge, beside a raw socket.

Against a private redis-server on a free port (bench/bridge.py's ``RedisBroker``), each line
times N round trips one after another and prints p50 / p99 µs:

- ``raw PING``: a blocking socket, one inline PING and its +PONG (the floor: the kernel and Redis).
- ``trio PING``: the same over a ``trio.SocketStream`` (what the event loop adds).
- ``coredis PING``: ``client.ping()`` through a client made as the bridge makes its own.
- ``coredis append``: ``RedisStream.append_many`` of one hub batch (the bridge's append call).
- ``coredis wake-up``: an append on one connection until a reader blocked in
  ``RedisStream.read`` (XREAD BLOCK, the other connection) has it back: the broker's share of
  the cross-hub latency.

Beside the wall times, the CPU this process spent per call (both ends, for the wake-up): on a
loaded machine the wall times swing with the neighbours, the CPU much less.

``--profile`` runs the coredis PING loop under pyinstrument (``pip install pyinstrument``) and
prints where the time goes.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

import trio
import trio.testing

from stereo.bridge.broker import Batch
from stereo.bridge.redis_stream import RedisStream
from stereo.wire.protocol import encode_broadcast

from .bridge import RedisBroker

FRAMES_PER_BATCH = 64  # a busy worker's read: 64 broadcasts of 64 B


class Samples(list[int]):
    """Wall times of calls (ns), and the process's CPU time over all of them (ns): the CPU
    figure moves less than the wall one when other processes load the machine."""

    cpu_ns = 0


def summary(name: str, samples: list[int]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] / 1000
    line = f"{name:<18} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs"
    if isinstance(samples, Samples):
        line += f"   CPU {samples.cpu_ns / len(samples) / 1000:8.1f} µs/call"
    return line


def raw_ping(port: int, count: int) -> Samples:
    samples = Samples()
    cpu = time.process_time_ns()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter_ns()
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(64)
            samples.append(time.perf_counter_ns() - start)
    samples.cpu_ns = time.process_time_ns() - cpu
    return samples


async def trio_ping(port: int, count: int) -> Samples:
    samples = Samples()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    cpu = time.process_time_ns()
    async with stream:
        for _ in range(count):
            start = time.perf_counter_ns()
            await stream.send_all(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += await stream.receive_some(64)
            samples.append(time.perf_counter_ns() - start)
    samples.cpu_ns = time.process_time_ns() - cpu
    return samples


async def timed(call: Callable[[], Awaitable[object]], count: int) -> Samples:
    samples = Samples()
    cpu = time.process_time_ns()
    for _ in range(count):
        start = time.perf_counter_ns()
        await call()
        samples.append(time.perf_counter_ns() - start)
    samples.cpu_ns = time.process_time_ns() - cpu
    return samples


def batch_frames() -> bytes:
    return encode_broadcast(b"x" * 64, 1 << 20) * FRAMES_PER_BATCH


async def coredis_calls(url: str, count: int) -> list[str]:
    name = f"calls-{uuid.uuid4().hex[:8]}"
    frames = batch_frames()
    numbers = iter(range(1, 1 << 30))
    hub = uuid.uuid4().hex

    def next_batch() -> list[Batch]:
        return [Batch(hub, next(numbers), FRAMES_PER_BATCH, frames)]

    async with (
        RedisStream(url, name) as appender,
        RedisStream(url, name) as follower,
    ):
        await appender.ping()  # connect first
        lines = [summary("coredis PING", await timed(appender.ping, count))]
        await appender.append_many(next_batch())
        appends = await timed(lambda: appender.append_many(next_batch()), count)
        lines.append(summary("coredis append", appends))
        lines.append(
            summary("coredis wake-up", await wake_ups(appender, follower, next_batch, count))
        )
    return lines


async def wake_ups(
    appender: RedisStream,
    follower: RedisStream,
    next_batch: Callable[[], list[Batch]],
    count: int,
) -> list[int]:
    """Append, and time until the follower (already blocked in XREAD) has the entry."""
    position = [await follower.tail()]
    samples = Samples()
    cpu = time.process_time_ns()
    appended = [0]  # when the append began

    async def read() -> None:
        entries = await follower.read(position[0], 5.0)
        samples.append(time.perf_counter_ns() - appended[0])
        position[0] = entries[-1].last_seq + 1

    for _ in range(count):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked(1e-4)  # the reader sits in XREAD BLOCK
            appended[0] = time.perf_counter_ns()
            await appender.append_many(next_batch())
    samples.cpu_ns = time.process_time_ns() - cpu
    return samples


async def profile_ping(url: str, count: int) -> None:
    # Optional (not in the bench extra): only this flag needs it.
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]

    async with RedisStream(url, f"calls-{uuid.uuid4().hex[:8]}") as stream:
        await stream.ping()
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        for _ in range(count):
            await stream.ping()
        profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=True))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_calls", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="round trips per line")
    parser.add_argument("--profile", action="store_true", help="profile the coredis PING loop")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="stereo-redis-calls-") as work,
        RedisBroker(work) as broker,
    ):
        if args.profile:
            trio.run(profile_ping, broker.url, args.count)
            return
        print(summary("raw PING", raw_ping(broker.port, args.count)))
        print(summary("trio PING", trio.run(trio_ping, broker.port, args.count)))
        for line in trio.run(coredis_calls, broker.url, args.count):
            print(line)


if __name__ == "__main__":
    main()
