"""The Redis Streams adapter (stereo/bridge/redis_stream.py): its pure parts, then the adapter
against a private redis-server on a free port (never the shared one on 6379), killed at the end.

Readiness is the server's own "Ready to accept connections" line, not a sleep; every test is
bounded by trio.fail_after.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import coredis
import coredis.exceptions
import pytest
import trio

from stereo.bridge.broker import Batch, BrokerRefused, BrokerUnavailable, Entry, Gap
from stereo.bridge.redis_stream import (
    APPEND_SCRIPT,
    RedisStream,
    StreamKeys,
    check_position,
    entry_id,
    error_reply,
    follow_on,
    parse_entry,
    script_args,
)

REDIS_SERVER = Path("/usr/bin/redis-server")
needs_redis = pytest.mark.skipif(not REDIS_SERVER.exists(), reason="no /usr/bin/redis-server")
# coredis (6.9) creates a connection's anyio memory streams before connecting and closes them
# only once connected: every attempt against a server that is down or paused leaves a few for
# the garbage collector, which warns. Harmless, not ours, and only that warning is silenced;
# the fixture collects them before the test ends so they cannot surface in a later test.
LEAKED_BY_FAILED_CONNECT = "ignore:Unclosed <MemoryObject(Send|Receive)Stream:ResourceWarning"
pytestmark = pytest.mark.filterwarnings(LEAKED_BY_FAILED_CONNECT)


# -- pure parts -------------------------------------------------------------------------------


def fields(
    first: int, count: int, hub: str = "h", n: int = 1, epoch: str = "E"
) -> dict[bytes | str, bytes | str]:
    return {
        b"first": str(first).encode(),
        b"count": str(count).encode(),
        b"hub": hub.encode(),
        b"n": str(n).encode(),
        b"e": epoch.encode(),
        b"frames": b"\x00\xff" * count,
    }


def test_keys() -> None:
    keys = StreamKeys.for_name("chat")
    assert keys.script_keys() == [
        "stereo:chat",
        "stereo:chat:seq",
        "stereo:chat:hubs",
        "stereo:chat:epoch",
    ]
    with pytest.raises(ValueError):
        StreamKeys.for_name("")


def test_script_writes_only_after_its_xadd() -> None:
    # A failing XADD aborts the script without undoing earlier writes: the counter, the dedup
    # hash and the epoch of an existing stream must only move after it.
    xadd = APPEND_SCRIPT.index("'XADD'")
    assert APPEND_SCRIPT.index("'SET', KEYS[2]") > xadd
    assert APPEND_SCRIPT.index("'HSET'") > xadd
    assert "string.format('0-%d', last)" in APPEND_SCRIPT
    assert "'MAXLEN', '~', ARGV[2]" in APPEND_SCRIPT


def test_script_args() -> None:
    two = [Batch("hub", 3, 2, b"ab"), Batch("hub", 4, 1, b"c")]
    assert script_args(two, 1000, "E") == ["hub", 1000, "E", 3, 2, b"ab", 4, 1, b"c"]
    with pytest.raises(ValueError):
        script_args([Batch("hub", 3, 0, b"")], 1000, "E")
    with pytest.raises(ValueError):
        script_args([Batch("hub", 0, 1, b"a")], 1000, "E")
    with pytest.raises(ValueError):
        script_args([Batch("hub", 1, 1, b"a"), Batch("other", 2, 1, b"b")], 1000, "E")
    with pytest.raises(ValueError):
        script_args([], 1000, "E")


def test_parse_entry() -> None:
    epoch, entry = parse_entry(b"0-12", fields(10, 3, "hub-a", 7))
    assert epoch == "E"
    assert entry == Entry(10, 3, "hub-a", 7, b"\x00\xff" * 3)
    assert entry_id(entry.last_seq) == "0-12"


@pytest.mark.parametrize(
    ("identifier", "values"),
    [
        (b"0-13", fields(10, 3)),  # the ID is not the last seq
        (b"1700000000000-0", fields(10, 3)),  # an auto ID: not ours
        (b"0-12", {k: v for k, v in fields(10, 3).items() if k != b"e"}),
        (b"0-12", {**fields(10, 3), b"count": b"three"}),
        (b"0-12", {**fields(10, 3), b"frames": "decoded"}),
        (b"0-9", fields(10, 0)),
    ],
)
def test_parse_entry_not_ours_is_a_gap(
    identifier: bytes, values: dict[bytes | str, bytes | str]
) -> None:
    with pytest.raises(Gap):
        parse_entry(identifier, values)


def test_follow_on() -> None:
    run = [parse_entry(b"0-5", fields(4, 2)), parse_entry(b"0-6", fields(6, 1))]
    entries, epoch = follow_on(4, None, run)
    assert [e.first_seq for e in entries] == [4, 6] and epoch == "E"
    assert follow_on(7, "E", []) == ([], "E")
    with pytest.raises(Gap, match="missing"):
        follow_on(1, None, run)  # trimmed: XREAD returned later entries
    with pytest.raises(Gap, match="backwards"):
        follow_on(5, None, run)
    with pytest.raises(Gap, match="missing"):
        follow_on(4, None, [run[0], parse_entry(b"0-9", fields(8, 2))])  # a hole in the middle
    with pytest.raises(Gap, match="epoch"):
        follow_on(4, "other", run)  # recreated, and its numbering happens to line up


def test_error_replies_keep_their_code() -> None:
    # coredis drops a known code from the text; the operator must read Redis's own words.
    wrongtype = coredis.exceptions.WrongTypeError("Operation against a key")
    assert error_reply(wrongtype) == "WRONGTYPE Operation against a key"
    assert error_reply(coredis.exceptions.AuthorizationError("no perm")) == "NOPERM no perm"
    oom = coredis.exceptions.ResponseError("OOM command not allowed")
    assert error_reply(oom) == "OOM command not allowed"
    generic = coredis.exceptions.ResponseError("wrong number of arguments")
    assert error_reply(generic) == "ERR wrong number of arguments"


def test_check_position() -> None:
    check_position(1, 0, None, None)
    check_position(11, 10, "E", "E")
    with pytest.raises(Gap, match="counter went backwards"):
        check_position(12, 10, "E", "E")
    with pytest.raises(Gap, match="epoch"):
        check_position(11, 10, "E", "F")


# -- against a private redis-server -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server without persistence: a restart comes back empty. ``host`` is the
    address it binds (and is reached at); ``prefix`` runs it under a command that execs it, e.g.
    ``ip netns exec NS`` for a server in its own network namespace."""

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.host = host
        self.prefix = prefix
        self.port = 0
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self, port: int | None = None) -> None:
        # The free port may be taken between our probe and the server's bind: try a few.
        for _ in range(5):
            chosen = port or free_port()
            process = await trio.lowlevel.open_process(
                [
                    *self.prefix,
                    str(REDIS_SERVER),
                    "--port",
                    str(chosen),
                    "--bind",
                    self.host,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    # Reached from other namespaces' addresses: no password, so not protected.
                    *(() if self.host == "127.0.0.1" else ("--protected-mode", "no")),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if await self._ready(process):
                self.process, self.port = process, chosen
                return
            process.kill()
            await process.wait()
            if port is not None:
                break
        raise RuntimeError("redis-server did not start")

    @staticmethod
    async def _ready(process: trio.Process) -> bool:
        """Read its log until it is ready (True) or exits (False, e.g. the port is taken).
        After startup it logs next to nothing, so the pipe is not read further."""
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(10):
            while b"Ready to accept connections" not in seen:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    return False
                seen += chunk
        return True

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    async def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            process.kill()  # SIGKILL works on a stopped process too
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    with trio.fail_after(15):
        await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()
        gc.collect()


async def read_until(stream: RedisStream, expected: int, last: int) -> list[Entry]:
    entries: list[Entry] = []
    while expected <= last:
        got = await stream.read(expected, block=1.0)
        entries += got
        if got:
            expected = got[-1].last_seq + 1
    return entries


def frames_of(hub: str, number: int, count: int) -> bytes:
    return b"".join(f"{hub}:{number}:{i};".encode() for i in range(count))


@needs_redis
async def test_two_hubs_share_one_order(redis: RedisServer) -> None:
    sizes = {"hub-a": [1 + i % 7 for i in range(150)], "hub-b": [1 + i % 5 for i in range(150)]}
    got: dict[str, list[int]] = {}

    async def hub(name: str) -> None:
        async with RedisStream(redis.url, "two") as stream:
            got[name] = []
            for number, count in enumerate(sizes[name], 1):
                first = await stream.append(
                    Batch(name, number, count, frames_of(name, number, count))
                )
                assert first is not None
                got[name].append(first)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub, "hub-a")
            nursery.start_soon(hub, "hub-b")
        total = sum(map(sum, sizes.values()))
        # The ranges of both hubs tile 1..total exactly: consecutive, no overlap.
        ranges = sorted(
            (first, first + count - 1)
            for name in sizes
            for first, count in zip(got[name], sizes[name], strict=True)
        )
        assert ranges[0][0] == 1 and ranges[-1][1] == total
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))

        async with RedisStream(redis.url, "two") as reader:
            assert await reader.tail() == total + 1
            entries = await read_until(reader, 1, total)
    assert [(e.first_seq, e.last_seq) for e in entries] == ranges
    for name in sizes:
        mine = [e for e in entries if e.hub_id == name]
        assert [e.number for e in mine] == list(range(1, 151))
        assert all(e.frames == frames_of(name, e.number, e.count) for e in mine)
        assert [e.first_seq for e in mine] == got[name]


@needs_redis
async def test_a_duplicate_is_dropped(redis: RedisServer) -> None:
    with trio.fail_after(10):
        async with RedisStream(redis.url, "dup") as stream:
            assert await stream.append(Batch("h", 1, 2, b"ab")) == 1
            assert await stream.append(Batch("h", 2, 1, b"c")) == 3
            assert await stream.append(Batch("h", 2, 1, b"c")) is None  # a resend
            assert await stream.append(Batch("h", 1, 2, b"ab")) is None  # an older one
            assert await stream.append(Batch("other", 1, 1, b"d")) == 4  # per hub
            assert await stream.tail() == 5
            entries = await stream.read(1, block=0)
    assert [(e.hub_id, e.number, e.frames) for e in entries] == [
        ("h", 1, b"ab"),
        ("h", 2, b"c"),
        ("other", 1, b"d"),
    ]


@needs_redis
async def test_many_batches_in_one_call_and_a_resend_overlapping_them(redis: RedisServer) -> None:
    with trio.fail_after(10):
        async with RedisStream(redis.url, "many") as stream:
            first = [Batch("h", n, 2, b"x%d" % n) for n in (1, 2, 3)]
            assert await stream.append_many(first) == [1, 3, 5]
            # A new bridge resends what it was not told had landed, then goes on.
            again = [Batch("h", 3, 2, b"x3"), Batch("h", 4, 1, b"y")]
            assert await stream.append_many(again) == [None, 7]
            entries = await stream.read(1, block=0)
    assert [(e.first_seq, e.count, e.number) for e in entries] == [
        (1, 2, 1),
        (3, 2, 2),
        (5, 2, 3),
        (7, 1, 4),
    ]


@needs_redis
async def test_a_trimmed_position_is_a_gap(redis: RedisServer) -> None:
    with trio.fail_after(20):
        async with RedisStream(redis.url, "trim", retention=10) as stream:
            assert await stream.read(1, block=0) == []
            for number in range(1, 1001):
                await stream.append(Batch("h", number, 2, b"xy"))
            # XREAD from a trimmed ID answers with later entries: the adapter must not.
            for expected in (1, 3, 501):
                with pytest.raises(Gap, match="missing") as caught:
                    await stream.read(expected, block=0)
                assert caught.value.expected == expected
                assert caught.value.found is not None and caught.value.found > expected
            # Near the tail (within the retention) reading works.
            entries = await stream.read(1991, block=0)
    assert [e.first_seq for e in entries] == list(range(1991, 2001, 2))


@needs_redis
async def test_redis_restarted_empty_is_a_gap(redis: RedisServer) -> None:
    with trio.fail_after(30):
        async with RedisStream(redis.url, "restart", timeout=2.0) as stream:
            for number in range(1, 11):
                await stream.append(Batch("h", number, 1, b"f"))
            assert len(await read_until(stream, 1, 10)) == 10
            port = redis.port
            await redis.stop()
            with pytest.raises(BrokerUnavailable):
                await stream.read(11, block=0.1)
            await redis.start(port)
            # The counter restarted behind the reader.
            await expect_gap(stream, 11, "counter went backwards")
            # Other hubs append past the reader, one frame a batch, so an entry starts exactly
            # at 11 as the reader expects: the arithmetic alone would take it; the epoch does not.
            async with RedisStream(redis.url, "restart") as other:
                for number in range(1, 13):
                    await other.append(Batch("h2", number, 1, b"g"))
            await expect_gap(stream, 11, "epoch")
            # Starting over at the tail works.
            assert await stream.tail() == 13
            await stream.append(Batch("h", 11, 1, b"again"))
            assert [e.frames for e in await stream.read(13, block=1)] == [b"again"]


@needs_redis
async def test_a_stream_recreated_by_the_same_adapter_has_another_epoch(
    redis: RedisServer,
) -> None:
    """The bridge appending and reading is one adapter: a stream its own append recreates (its
    pending batches, resent to a Redis restarted empty) must not get the epoch it pinned, or
    its reader would take the new entries for the old ones' successors (found by
    tests/test_bridge_faults.py)."""
    with trio.fail_after(30):
        async with RedisStream(redis.url, "self", timeout=2.0) as stream:
            for number in range(1, 11):
                await stream.append(Batch("h", number, 1, b"f"))
            assert len(await read_until(stream, 1, 10)) == 10
            port = redis.port
            await redis.stop()
            await redis.start(port)
            for number in range(11, 23):
                try:
                    await stream.append(Batch("h", number, 1, b"g"))
                except BrokerUnavailable:  # a pooled connection to the old server, found dead
                    await stream.append(Batch("h", number, 1, b"g"))
            await expect_gap(stream, 11, "epoch")


async def expect_gap(stream: RedisStream, expected: int, reason: str) -> None:
    """The next read raises Gap; one BrokerUnavailable first is allowed (a pooled connection
    to the old server found dead on use)."""
    with pytest.raises(Gap, match=reason):
        try:
            await stream.read(expected, block=0.1)
        except BrokerUnavailable:
            await stream.read(expected, block=0.1)
        raise AssertionError("read went on after a restart")


@needs_redis
async def test_a_paused_server_is_unavailable_after_the_timeout(redis: RedisServer) -> None:
    # Chosen behaviour: a call never waits past its bound (``timeout``, plus ``block`` for a
    # read); it raises BrokerUnavailable and the bridge retries. An append that timed out may
    # still land once the server resumes: the resend is then dropped as a duplicate.
    with trio.fail_after(20):
        async with RedisStream(redis.url, "pause", timeout=0.5) as stream:
            assert await stream.append(Batch("h", 1, 1, b"a")) == 1
            redis.signal(signal.SIGSTOP)
            try:
                for call in (
                    stream.append(Batch("h", 2, 1, b"b")),
                    stream.read(2, block=0.2),
                    stream.tail(),
                ):
                    start = time.monotonic()
                    with pytest.raises(BrokerUnavailable):
                        await call
                    assert time.monotonic() - start < 2
            finally:
                redis.signal(signal.SIGCONT)
            first = None
            for _ in range(3):  # the first call may meet a connection the timeout abandoned
                try:
                    first = await stream.append(Batch("h", 2, 1, b"b"))
                    break
                except BrokerUnavailable:
                    continue
            assert first in (2, None)  # None: the timed-out append had landed
            entries = await read_until(stream, 1, 2)
    assert [(e.first_seq, e.frames) for e in entries] == [(1, b"a"), (2, b"b")]


@needs_redis
async def test_throughput(redis: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    batches, per_batch, hubs = 10_000, 100, 4
    frame = b"f" * 64
    payload = frame * per_batch
    with trio.fail_after(90):

        async def hub(index: int) -> None:
            # One hub appends in order (the dedup relies on it); hubs run side by side.
            async with RedisStream(redis.url, "bench", retention=batches * 2) as stream:
                for number in range(1, batches // hubs + 1):
                    await stream.append(Batch(f"hub-{index}", number, per_batch, payload))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(hubs):
                nursery.start_soon(hub, index)
        appended = time.perf_counter() - start

        total = batches * per_batch
        async with RedisStream(redis.url, "bench", retention=batches * 2) as reader:
            start = time.perf_counter()
            entries = await read_until(reader, 1, total)
            read = time.perf_counter() - start
    assert len(entries) == batches and all(e.frames == payload for e in entries)
    with capsys.disabled():
        print(
            f"\nredis stream: append {total / appended:,.0f} frames/s "
            f"({batches / appended:,.0f} batches/s, {hubs} hubs), "
            f"read {total / read:,.0f} frames/s"
        )
    assert total / appended > 50_000 and total / read > 50_000  # a sanity floor only


# What makes Redis answer the bridge with an error, what it says, and what puts it right.
Admin = coredis.Redis[bytes]
Change = Callable[[Admin], Awaitable[object]]
ERROR_REPLIES: dict[str, tuple[Change, str, Change]] = {
    # The stream's key holds another type (an operator's mistake, another app's key).
    "wrongtype": (
        lambda admin: admin.set("stereo:errors", "not a stream"),
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        lambda admin: admin.delete(["stereo:errors"]),
    ),
    # The bridge's ACL user may read but not run the append script.
    "noperm": (
        lambda admin: admin.acl_setuser("default", "-evalsha", "-eval"),
        "NOPERM this user has no permissions to run the 'evalsha' command",
        lambda admin: admin.acl_setuser("default", "+evalsha", "+eval"),
    ),
    "oom": (
        lambda admin: admin.config_set({"maxmemory": 1}),
        "OOM command not allowed when used memory > 'maxmemory'",
        lambda admin: admin.config_set({"maxmemory": 0}),
    ),
    # A replica (here of a master that is not there) refuses writes.
    "readonly": (
        lambda admin: admin.replicaof("127.0.0.1", 1),
        "READONLY You can't write against a read only replica",
        lambda admin: admin.replicaof(),
    ),
}


@needs_redis
@pytest.mark.parametrize("case", list(ERROR_REPLIES))
async def test_an_error_reply_is_refused_in_redis_words_then_clears(
    redis: RedisServer, case: str
) -> None:
    """An error reply is BrokerRefused, saying Redis's words (not a crash of the bridge); once
    the cause is gone the same adapter appends and reads on, nothing lost or duplicated."""
    cause, words, cure = ERROR_REPLIES[case]
    with trio.fail_after(30):
        async with (
            coredis.Redis.from_url(redis.url) as admin,
            RedisStream(redis.url, "errors", timeout=2.0) as stream,
        ):
            assert await stream.append(Batch("h", 1, 1, b"a")) == 1
            assert [e.first_seq for e in await stream.read(1, block=0.1)] == [1]
            await cause(admin)
            with pytest.raises(BrokerRefused) as refused:
                await stream.append(Batch("h", 2, 1, b"b"))
            assert str(refused.value).startswith(f"redis answered: {words}")
            if case == "wrongtype":  # reading the key fails as well
                with pytest.raises(BrokerRefused, match="WRONGTYPE"):
                    await stream.read(2, block=0.1)
            await cure(admin)
            assert await stream.append(Batch("h", 2, 1, b"b")) == 2
            assert await stream.append(Batch("h", 2, 1, b"b")) is None  # a resend is dropped
            entries = await read_until(stream, 2, 2)
    assert [(e.first_seq, e.frames) for e in entries] == [(2, b"b")]
