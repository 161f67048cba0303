"""The JetStream adapter against a private ``nats-server -js`` (never the shared one on 4222):
numbering under concurrent appenders, idempotent resends (regrouped, and past the duplicate
window), trimming, a server that lost its store, a server that went away and came back, and a
throughput run.

nats-py is asyncio only and pytest runs async tests under trio here, so each test is a plain
function calling ``asyncio.run`` on a coroutine bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig

from stereo.bridge.broker import Batch, BrokerUnavailable, Entry, Gap
from stereo.bridge.jetstream import JetStream, StreamMismatch, stream_config_problems
from stereo.bridge.jetstream_stream import stream_config

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
LISTENING = re.compile(r"Listening for client connections on [\d.]+:(\d+)")
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    not Path(NATS_SERVER).exists(), reason="nats-server is not installed"
)


class NatsServer:
    """A private JetStream server on a port it picks itself (``-p -1``) the first time and keeps
    across restarts, its store under a test's tmp_path. ``host`` is the address it binds (and is
    reached at); ``prefix`` runs it under a command that execs it, e.g. ``ip netns exec NS``."""

    def __init__(
        self, store: Path, host: str = "127.0.0.1", prefix: tuple[str, ...] = (), port: int = -1
    ) -> None:
        self.store = store
        self.host = host
        self.prefix = prefix
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                *self.prefix,
                NATS_SERVER,
                "-js",
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ready = threading.Event()
        stderr = self.process.stderr
        assert stderr is not None

        # The server logs to stderr; a thread drains it for the server's whole life (a full pipe
        # would stall it) and says when the server is ready, so nothing polls.
        def drain() -> None:
            for line in stderr:
                if match := LISTENING.search(line.decode(errors="replace")):
                    self.port = int(match.group(1))
                if b"Server is ready" in line:
                    ready.set()

        self._drainer = threading.Thread(target=drain, daemon=True)
        self._drainer.start()
        if not ready.wait(10):
            self.stop()
            raise RuntimeError("nats-server did not become ready in 10 s")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot stop
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            if self._drainer is not None:
                self._drainer.join(10)  # it ends at the pipe's EOF, now the server is gone
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def wipe(self) -> None:
        """Lose the store (a server restarted on a fresh disk)."""
        assert self.process is None
        shutil.rmtree(self.store, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats = NatsServer(tmp_path / "js")
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


def run(coro: Awaitable[T], seconds: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(seconds):
            return await coro

    return asyncio.run(bounded())


def batch(hub: str, number: int, count: int = 3) -> Batch:
    frames = b"".join(f"{hub}:{number}:{i};".encode() for i in range(count))
    return Batch(hub_id=hub, number=number, count=count, frames=frames)


async def read_all(broker: JetStream, expected: int, until: int) -> list[Entry]:
    entries: list[Entry] = []
    while expected < until:
        got = await broker.read(expected, block=2)
        assert got, f"nothing read at {expected}, {until} expected"
        entries += got
        expected = got[-1].last_seq + 1
    return entries


def test_concurrent_appenders_get_consecutive_ranges(server: NatsServer) -> None:
    async def main() -> None:
        a = JetStream(server.url, "conc", retention=10_000)
        b = JetStream(server.url, "conc", retention=10_000)
        reader = JetStream(server.url, "conc", retention=10_000)
        assert await reader.tail() == 1

        async def appender(broker: JetStream, hub: str) -> list[tuple[int, Batch]]:
            done = []
            for number in range(1, 151):
                one = batch(hub, number, count=1 + number % 7)
                first = await broker.append(one)
                assert first is not None
                done.append((first, one))
            return done

        got_a, got_b = await asyncio.gather(appender(a, "hub-a"), appender(b, "hub-b"))
        ranges = sorted((first, first + one.count) for first, one in got_a + got_b)
        total = sum(one.count for _, one in got_a + got_b)
        # Consecutive and non-overlapping: each range starts where the previous one ended.
        assert ranges[0][0] == 1
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(ranges))
        assert ranges[-1][1] == total + 1
        assert a.conflicts + b.conflicts > 0  # they did race

        entries = await read_all(reader, 1, total + 1)
        assert [(e.first_seq, e.first_seq + e.count) for e in entries] == ranges
        by_first = {first: one for first, one in got_a + got_b}
        for entry in entries:
            one = by_first[entry.first_seq]
            assert (entry.hub_id, entry.number, entry.count) == (one.hub_id, one.number, one.count)
            assert entry.frames == one.frames
        # A second reader starting from any entry's first seq finds the same order.
        other = JetStream(server.url, "conc", retention=10_000)
        middle = entries[len(entries) // 2]
        assert (await read_all(other, middle.first_seq, total + 1)) == entries[len(entries) // 2 :]
        for broker in (a, b, reader, other):
            await broker.aclose()

    run(main())


def test_an_appender_follows_what_its_reader_read(server: NatsServer) -> None:
    """Two hubs taking turns, each reading the other's entries as a bridge does: an append
    after reading the other hub's entry starts from there, so it is not refused (it was, every
    other turn, a refused publish and a read of the last entry each)."""

    async def main() -> None:
        a = JetStream(server.url, "turns", retention=100)
        b = JetStream(server.url, "turns", retention=100)
        assert await a.tail() == 1
        assert await b.tail() == 1
        expected = {a: 1, b: 1}

        async def catch_up(broker: JetStream, until: int) -> None:
            entries = await read_all(broker, expected[broker], until)
            expected[broker] = entries[-1].last_seq + 1

        for number in range(1, 6):
            for me, other, hub in ((a, b, "a"), (b, a, "b")):
                first = await me.append(batch(hub, number, count=2))
                assert first is not None
                await catch_up(me, first + 2)
                await catch_up(other, first + 2)
        assert (a.conflicts, b.conflicts) == (0, 0)
        await a.aclose()
        await b.aclose()

    run(main())


def test_an_entry_known_to_exist_then_trimmed_is_a_gap(server: NatsServer) -> None:
    """A reader behind the stream reads on without asking for the stream's state each time;
    an entry it knew of that was trimmed meanwhile is still a Gap, never skipped."""

    async def main() -> None:
        writer = JetStream(server.url, "behind", retention=5)
        reader = JetStream(server.url, "behind", retention=5, read_batch=2)
        for number in range(1, 5):
            await writer.append(batch("h", number, count=1))
        assert [e.number for e in await reader.read(1, block=0)] == [1, 2]
        for number in range(5, 10):
            await writer.append(batch("h", number, count=1))
        with pytest.raises(Gap, match="trimmed") as caught:
            await reader.read(3, block=0)
        assert caught.value.expected == 3
        await writer.aclose()
        await reader.aclose()

    run(main())


def test_resent_batch_is_dropped(server: NatsServer) -> None:
    async def main() -> None:
        broker = JetStream(server.url, "dup", retention=100)
        assert await broker.append(batch("h", 1, count=4)) == 1
        assert await broker.append(batch("h", 1, count=4)) is None
        # A fresh adapter (a restarted bridge) resending it: still dropped.
        again = JetStream(server.url, "dup", retention=100)
        assert await again.append(batch("h", 1, count=4)) is None
        assert await again.append(batch("h", 2, count=2)) == 5
        assert await broker.tail() == 7
        entries = await read_all(broker, 1, 7)
        assert [(e.hub_id, e.number, e.first_seq) for e in entries] == [("h", 1, 1), ("h", 2, 5)]
        await broker.aclose()
        await again.aclose()

    run(main())


def test_a_resend_past_the_duplicate_window_is_dropped(server: NatsServer) -> None:
    """JetStream appends a message ID again once its duplicate window has passed (a broker
    away for minutes keeps the hub's batches waiting that long): the hub's own subject still
    says the batch is in, for a restarted bridge and for one whose append call failed."""

    async def main() -> None:
        broker = JetStream(server.url, "late", retention=100, duplicate_window=0.5)
        assert await broker.append(batch("h", 1, count=4)) == 1
        await asyncio.sleep(1.0)  # the fault, held: past the window
        again = JetStream(server.url, "late", retention=100, duplicate_window=0.5)
        assert await again.append(batch("h", 1, count=4)) is None
        assert await again.append(batch("h", 2, count=2)) == 5
        # The server restarted (store kept): the append call fails, its outcome unknown.
        await asyncio.to_thread(server.stop)
        with pytest.raises(BrokerUnavailable):
            await again.append(batch("h", 3, count=1))
        await asyncio.to_thread(server.start)
        await asyncio.sleep(1.0)  # past the window again
        assert await again.append(batch("h", 2, count=2)) is None
        assert await again.append(batch("h", 3, count=1)) == 7
        entries = await read_all(broker, 1, 8)
        assert [(e.number, e.first_seq) for e in entries] == [(1, 1), (2, 5), (3, 7)]
        await broker.aclose()
        await again.aclose()

    run(main())


def test_batches_that_piled_up_are_one_entry_and_a_regrouped_resend_is_dropped(
    server: NatsServer,
) -> None:
    """The bridge appends what piled up as one message; a new bridge gets every batch not yet
    acknowledged, maybe grouped otherwise: those in the stream are dropped, the rest appended."""

    async def main() -> None:
        broker = JetStream(server.url, "merge", retention=100)
        one, two, three = batch("h", 1, count=2), batch("h", 2, count=3), batch("h", 3, count=1)
        assert await broker.append_many([one, two]) == 1
        again = JetStream(server.url, "merge", retention=100)  # a restarted bridge
        assert await again.append_many([two]) is None
        assert await again.append_many([two, three]) == 6
        entries = await read_all(broker, 1, 7)
        assert [(e.number, e.first_seq, e.count) for e in entries] == [(2, 1, 5), (3, 6, 1)]
        assert entries[0].frames == one.frames + two.frames
        await broker.aclose()
        await again.aclose()

    run(main())


def test_tail_of_an_empty_stream_sees_an_append_racing_it(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two hubs starting together: one finds the stream empty, the other appends before the
    # first's stream info. Its tail must be after that entry, or its first read is a Gap.
    async def main() -> None:
        writer = JetStream(server.url, "race", retention=100)
        reader = JetStream(server.url, "race", retention=100)
        assert await writer.tail() == 1
        original = JetStreamContext.get_last_msg
        raced = False

        async def get_last_msg(self: JetStreamContext, *args: Any, **kwargs: Any) -> Any:
            nonlocal raced
            try:
                return await original(self, *args, **kwargs)
            except nats.js.errors.NotFoundError:
                if not raced:
                    raced = True
                    assert await writer.append(batch("w", 1, count=3)) == 1
                raise

        monkeypatch.setattr(JetStreamContext, "get_last_msg", get_last_msg)
        assert await reader.tail() == 4
        assert raced
        assert await writer.append(batch("w", 2, count=1)) == 4
        assert [e.first_seq for e in await reader.read(4, block=2)] == [4]
        await writer.aclose()
        await reader.aclose()

    run(main())


def test_reading_below_the_retention_is_a_gap(server: NatsServer) -> None:
    async def main() -> None:
        writer = JetStream(server.url, "trim", retention=5)
        reader = JetStream(server.url, "trim", retention=5)
        for number in range(1, 4):
            await writer.append(batch("h", number, count=2))
        assert len(await reader.read(1, block=0)) == 3  # the reader is at seq 7, stream seq 4
        for number in range(4, 21):
            await writer.append(batch("h", number, count=2))
        with pytest.raises(Gap, match="trimmed") as caught:
            await reader.read(7, block=0)
        assert caught.value.expected == 7
        # A fresh reader asking for a trimmed seq, and for one that never was.
        fresh = JetStream(server.url, "trim", retention=5)
        with pytest.raises(Gap, match="trimmed"):
            await fresh.read(1, block=0)
        with pytest.raises(Gap, match="ends before"):
            await fresh.read(100, block=0)
        with pytest.raises(Gap, match="inside an entry"):
            await fresh.read(34, block=0)
        assert [e.first_seq for e in await fresh.read(33, block=0)] == [33, 35, 37, 39]
        for broker in (writer, reader, fresh):
            await broker.aclose()

    run(main())


async def eventually(call: Callable[[], Awaitable[T]], seconds: float) -> T:
    """``call()`` until it stops raising BrokerUnavailable (a bridge's retry, minus backoff)."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except BrokerUnavailable:
                await asyncio.sleep(0.05)


def test_server_restarted_without_its_store_is_a_gap(server: NatsServer) -> None:
    async def main() -> None:
        writer = JetStream(server.url, "wipe", retention=100, timeout=2)
        reader = JetStream(server.url, "wipe", retention=100, timeout=2)
        for number in range(1, 6):
            await writer.append(batch("h", number))
        assert len(await read_all(reader, 1, 16)) == 5
        server.stop()
        server.wipe()
        server.start()
        with pytest.raises(Gap):
            await eventually(lambda: reader.read(16, block=0), 10)
        # A fresh reader with the old position: the new stream does not reach it.
        fresh = JetStream(server.url, "wipe", retention=100, timeout=2)
        with pytest.raises(Gap):
            await fresh.read(16, block=0)
        # The writer carries on in the new stream, from 1; the hub restarts at the tail.
        assert await eventually(lambda: writer.append(batch("h", 6)), 10) == 1
        assert await reader.tail() == 4
        for broker in (writer, reader, fresh):
            await broker.aclose()

    run(main())


def test_server_away_is_unavailable_then_usable(server: NatsServer) -> None:
    async def main() -> None:
        writer = JetStream(server.url, "away", retention=100, timeout=1)
        reader = JetStream(server.url, "away", retention=100, timeout=1)
        assert await writer.append(batch("h", 1)) == 1
        assert len(await reader.read(1, block=0)) == 1
        server.stop()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await writer.append(batch("h", 2))
        with pytest.raises(BrokerUnavailable):
            await reader.read(4, block=1)
        with pytest.raises(BrokerUnavailable):
            await reader.tail()
        assert time.monotonic() - started < 5
        server.start()  # same port, same store
        assert await eventually(lambda: writer.append(batch("h", 2)), 10) == 4
        entries = await eventually(lambda: reader.read(4, block=1), 10)
        assert [(e.number, e.first_seq) for e in entries] == [(2, 4)]
        await writer.aclose()
        await reader.aclose()

    run(main())


def test_a_waiting_reader_wakes_on_append(server: NatsServer) -> None:
    async def main() -> None:
        writer = JetStream(server.url, "wake", retention=100)
        reader = JetStream(server.url, "wake", retention=100)
        assert await reader.read(1, block=0.05) == []
        waiting = asyncio.create_task(reader.read(1, block=30))
        await asyncio.sleep(0.2)  # let the reader get to its wait; it must not need the 30 s
        started = time.monotonic()
        await writer.append(batch("h", 1))
        assert [e.number for e in await waiting] == [1]
        assert time.monotonic() - started < 5
        await writer.aclose()
        await reader.aclose()

    run(main())


@pytest.mark.parametrize("republished", [True, False], ids=["republished", "older-stream"])
def test_waiting_readers_are_handed_each_entry_in_turn(
    server: NatsServer, republished: bool
) -> None:
    """A caught-up reader hands over each entry as it is stored, in order, whether the stream
    republishes its entries (what stereo creates) or not (a stream an older stereo made: the
    reader waits on the publishes themselves, refused ones included)."""

    async def main() -> None:
        if not republished:
            nc = await nats.connect(server.url)
            config = stream_config("STEREO_feed", "stereo.feed.*", 100, 120, "unused.*")
            config.republish = None
            await nc.jetstream().add_stream(config)
            await nc.close()
        a = JetStream(server.url, "feed", retention=100)
        b = JetStream(server.url, "feed", retention=100)
        reader = JetStream(server.url, "feed", retention=100)
        assert await reader.tail() == 1
        expected = 1
        for number in range(1, 21):
            waiting = asyncio.create_task(reader.read(expected, block=30))
            # The two appenders race for each entry: one of them is refused each time.
            firsts = await asyncio.gather(
                a.append(batch("a", number, count=1)), b.append(batch("b", number, count=2))
            )
            got = await waiting
            got += await read_all(reader, got[-1].last_seq + 1, expected + 3)
            assert sorted(e.first_seq for e in got) == sorted(firsts)
            assert [e.first_seq for e in got] == [expected, got[0].last_seq + 1]
            expected += 3
        nc = await nats.connect(server.url)
        config = (await nc.jetstream().stream_info("STEREO_feed")).config
        assert (config.republish is not None) == republished
        await nc.close()
        for broker in (a, b, reader):
            await broker.aclose()

    run(main())


def test_a_stream_recreated_under_a_waiting_reader_is_a_gap(server: NatsServer) -> None:
    """A reader waiting on the stream's feed, the stream deleted and made again, filled up to
    the very stream seq and global seq the reader waits for: a Gap, never the new entry."""

    async def main() -> None:
        writer = JetStream(server.url, "again", retention=100)
        reader = JetStream(server.url, "again", retention=100)
        assert await reader.read(1, block=0.05) == []  # subscribed to the feed
        for number in range(1, 4):
            await writer.append(batch("h", number, count=1))
        await read_all(reader, 1, 4)  # from the feed: the next read waits on it at once
        waiting = asyncio.create_task(reader.read(4, block=30))
        nc = await nats.connect(server.url)
        await nc.jetstream().delete_stream("STEREO_again")
        await nc.close()
        other = JetStream(server.url, "again", retention=100)
        for number in range(1, 5):
            assert await other.append(batch("k", number, count=1)) == number
        with pytest.raises(Gap, match=r"recreated|gone"):
            await waiting
        for broker in (writer, reader, other):
            await broker.aclose()

    run(main())


def test_an_incompatible_stream_is_refused(server: NatsServer) -> None:
    async def main() -> None:
        first = JetStream(server.url, "cfg", retention=100)
        assert await first.tail() == 1
        other = JetStream(server.url, "cfg", retention=50)
        with pytest.raises(StreamMismatch, match="max_msgs 100 instead of 50"):
            await other.tail()
        await first.aclose()
        await other.aclose()

    run(main())


def test_stream_config_problems() -> None:
    good = StreamConfig(subjects=["stereo.x.*"], max_msgs=10, duplicate_window=120)
    assert stream_config_problems(good, "stereo.x.*", 10) == []
    bad = StreamConfig(
        subjects=["stereo.>"], max_msgs=5, discard=DiscardPolicy.NEW, duplicate_window=0
    )
    assert len(stream_config_problems(bad, "stereo.x.*", 10)) == 4


def test_throughput(server: NatsServer) -> None:
    """10,000 batches of 100 frames of 64 B, appended one after another, then read back."""
    frames = bytes(64) * 100
    hub = uuid.uuid4().hex

    async def main() -> tuple[float, float]:
        writer = JetStream(server.url, "bench", retention=20_000)
        reader = JetStream(server.url, "bench", retention=20_000, read_batch=512)
        started = time.perf_counter()
        for number in range(1, 10_001):
            await writer.append(Batch(hub, number, 100, frames))
        appended = time.perf_counter() - started
        started = time.perf_counter()
        entries = await read_all(reader, 1, 1_000_001)
        read = time.perf_counter() - started
        assert len(entries) == 10_000 and entries[-1].last_seq == 1_000_000
        await writer.aclose()
        await reader.aclose()
        return appended, read

    appended, read = run(main(), seconds=110)
    print(f"\nappend {1e6 / appended:,.0f} frames/s, read {1e6 / read:,.0f} frames/s")


@pytest.mark.parametrize("appenders", [2, 4])
def test_throughput_of_racing_appenders(server: NatsServer, appenders: int) -> None:
    """What the optimistic append costs when hubs race: each lost race is a refused publish
    plus a read of the new last entry."""
    frames = bytes(64) * 100
    per_hub = 2_000

    async def main() -> tuple[float, int]:
        brokers = [JetStream(server.url, "race", retention=20_000) for _ in range(appenders)]

        async def append_all(broker: JetStream, hub: str) -> None:
            for number in range(1, per_hub + 1):
                assert await broker.append(Batch(hub, number, 100, frames)) is not None

        started = time.perf_counter()
        await asyncio.gather(*(append_all(b, f"hub-{i}") for i, b in enumerate(brokers)))
        elapsed = time.perf_counter() - started
        assert await brokers[0].tail() == appenders * per_hub * 100 + 1
        conflicts = sum(b.conflicts for b in brokers)
        for broker in brokers:
            await broker.aclose()
        return elapsed, conflicts

    elapsed, conflicts = run(main(), seconds=110)
    total = appenders * per_hub
    print(
        f"\n{appenders} appenders: {total * 100 / elapsed:,.0f} frames/s, "
        f"{conflicts} refused appends for {total} entries"
    )
