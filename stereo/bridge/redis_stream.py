"""The Redis Streams adapter of the broker bridge (docs/scale-out.md), under trio with coredis.

One stream per bridge name. Each appended batch is one entry whose ID is ``0-<last seq>``, so
IDs and global seqs are the same arithmetic: a reader at ``expected`` asks XREAD for what comes
after ``0-<expected - 1>`` and checks that every entry starts where the previous one ended.
XREAD from a trimmed ID silently returns later entries, and a Redis restarted without
persistence starts its counter again at 1; the arithmetic and a per-stream epoch (a random token
stamped into every entry, drawn when the counter is created) turn both into a ``Gap``.

The keys of a stream NAME: ``stereo:NAME`` (the stream), ``stereo:NAME:seq`` (the last global
seq handed out), ``stereo:NAME:hubs`` (hash: hub id -> its last appended batch number, which
makes the append idempotent) and ``stereo:NAME:epoch``.

The pure parts (the script text, the keys, parsing and checking XREAD entries) are module
functions; ``RedisStream`` is the thin I/O around them.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Self

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.connection import BaseConnection
from coredis.parser import Parser
from coredis.pool import ConnectionPool
from coredis.typing import RedisValueT, ResponseType

from .broker import Batch, BrokerRefused, BrokerUnavailable, Entry, Gap, check_follows

# KEYS: stream, counter, hubs, epoch. ARGV: hub id, retention (MAXLEN ~), an epoch to use if the
# stream has none yet, then (batch number, frame count, frames) for each batch, in order.
# Returns each batch's first seq, 0 for a resend dropped. Several batches per call: one round
# trip per call, not per batch, is what keeps a busy bridge ahead of its hub.
# Each XADD comes before the writes that record it: a failing command aborts a script without
# undoing the writes before it, so the counter and the dedup hash move only once the entry
# exists. (GET and SET of the counter, not INCRBY, for that reason; the script is atomic all the
# same.) Numbers go through string.format('%d'): Lua 5.1 prints doubles past 1e14 with an
# exponent.
APPEND_SCRIPT = """\
local hub = ARGV[1]
local seen = tonumber(redis.call('HGET', KEYS[3], hub) or '0')
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[4], epoch)
end
local firsts = {}
for i = 4, #ARGV, 3 do
  local number = tonumber(ARGV[i])
  if number <= seen then
    firsts[#firsts + 1] = 0
  else
    local first = counter + 1
    local last = counter + tonumber(ARGV[i + 1])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('0-%d', last),
      'first', string.format('%d', first), 'count', ARGV[i + 1], 'hub', hub, 'n', ARGV[i],
      'e', epoch, 'frames', ARGV[i + 2])
    redis.call('SET', KEYS[2], string.format('%d', last))
    redis.call('HSET', KEYS[3], hub, ARGV[i])
    counter = last
    seen = number
    firsts[#firsts + 1] = first
  end
end
return firsts
"""

SCRIPT_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()

# Entries per XREAD: enough to amortise the round trip, few enough to keep a reply small
# (an entry is one hub batch, typically a few kB).
READ_COUNT = 256

# What a lost, refused, reset or restarting server looks like from coredis under anyio: retry.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,  # also BusyLoadingError (a restart loading its data)
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


# coredis turns an error reply into an exception named after its code and drops the code from
# the text ("WRONGTYPE Operation against..." becomes WrongTypeError("Operation against...")).
_ERROR_CODES = {
    kind: code for code, kind in Parser.EXCEPTION_CLASSES.items() if isinstance(kind, type)
}


def error_reply(error: coredis.exceptions.ResponseError) -> str:
    """The error reply as Redis sent it (its code first), for the operator to recognise."""
    text = str(error)
    code = _ERROR_CODES.get(type(error))
    if code is None:
        first = text.split(" ", 1)[0]
        # An unknown code stays in the text (OOM, BUSY, MISCONF...); the generic ERR is dropped.
        code = None if first.isupper() and first.isalpha() else "ERR"
    return f"{code} {text}" if code else text


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream: str
    counter: str
    hubs: str
    epoch: str

    @classmethod
    def for_name(cls, name: str) -> StreamKeys:
        if not name:
            raise ValueError("a bridge name must not be empty")
        base = f"stereo:{name}"
        return cls(base, f"{base}:seq", f"{base}:hubs", f"{base}:epoch")

    def script_keys(self) -> list[str]:
        """In the order APPEND_SCRIPT reads them."""
        return [self.stream, self.counter, self.hubs, self.epoch]


def entry_id(last_seq: int) -> str:
    return f"0-{last_seq}"


def script_args(batches: list[Batch], retention: int, epoch: str) -> list[str | int | bytes]:
    """ARGV of APPEND_SCRIPT for ``batches`` (one hub's, in order)."""
    if not batches:
        raise ValueError("nothing to append")
    args: list[str | int | bytes] = [batches[0].hub_id, retention, epoch]
    for batch in batches:
        if batch.count < 1:
            raise ValueError(f"a batch holds at least one frame, not {batch.count}")
        if batch.number < 1:
            raise ValueError(f"batch numbers start at 1, not {batch.number}")
        if batch.hub_id != batches[0].hub_id:
            raise ValueError("one call appends one hub's batches")
        args += [batch.number, batch.count, batch.frames]
    return args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    # Frames are bytes; a str means a client decoding replies, which would mangle them.
    if not isinstance(value, bytes):
        raise TypeError("frames arrived decoded")
    return value


def parse_entry(
    identifier: bytes | str, fields: Mapping[bytes | str, bytes | str]
) -> tuple[str, Entry]:
    """One stream entry as (its epoch, the Entry). An entry this adapter did not write (a
    missing field, an ID that is not its last seq) is a hole in the order: ``Gap`` (with
    ``expected`` 0: the caller's position is not known here)."""
    found = {_text(key): value for key, value in fields.items()}
    try:
        first = int(found["first"])
        entry = Entry(
            first_seq=first,
            count=int(found["count"]),
            hub_id=_text(found["hub"]),
            number=int(found["n"]),
            frames=_raw(found["frames"]),
        )
        epoch = _text(found["e"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise Gap(0, None, f"entry {_text(identifier)!r} is not a stereo batch ({error})") from None
    if _text(identifier) != entry_id(entry.last_seq) or entry.count < 1:
        raise Gap(0, first, f"entry {_text(identifier)!r} does not match its seqs")
    return epoch, entry


def follow_on(
    expected: int, epoch: str | None, entries: Iterable[tuple[str, Entry]]
) -> tuple[list[Entry], str | None]:
    """Check that ``entries`` continue the order exactly at ``expected`` and all belong to the
    stream ``epoch`` (None: not known yet, the first entry's is taken). The entries, and the
    epoch now known. Raises Gap."""
    run: list[Entry] = []
    for entry_epoch, entry in entries:
        if epoch is not None and entry_epoch != epoch:
            raise Gap(expected, entry.first_seq, "the stream was recreated (another epoch)")
        epoch = entry_epoch
        check_follows(expected, entry)
        run.append(entry)
        expected = entry.last_seq + 1
    return run, epoch


def check_position(expected: int, counter: int, epoch: str | None, current: str | None) -> None:
    """After a read that found nothing: ``expected`` must still be at most the tail, in the same
    stream. A counter behind the reader, or another epoch, means the stream was recreated (a
    Redis restarted without persistence), and XREAD would wait for IDs that mean other frames."""
    if expected > counter + 1:
        raise Gap(expected, counter + 1, "the stream was recreated (its counter went backwards)")
    if epoch is not None and current is not None and current != epoch:
        raise Gap(expected, counter + 1, "the stream was recreated (another epoch)")


class RedisStream:
    """A Broker on one Redis stream. Use as ``async with RedisStream(url, name) as stream``: its
    connection lives in that block (a task of a nursery there).

    One dedicated coredis connection, and raw requests on it (``create_request``: RESP3, bytes
    in and out, no typed reply callbacks): coredis's client adds a connection pool lease, a
    retry policy and a reply callback to every call, which cost more than the round trip itself
    (bench/redis_calls.py). A connection that failed or timed out is dropped, and the next call
    connects again.

    Every call is bounded by ``timeout`` (plus the read's ``block``) and raises
    BrokerUnavailable past it or on any connection error, and BrokerRefused when Redis answers
    with an error (a key of another type, no permission, out of memory, a read-only replica).
    A reader pins the stream's epoch (from ``tail()``, its first entry, or the ``epoch`` given,
    e.g. kept across a bridge restart) and raises Gap on a recreated stream.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        retention: int = 100_000,
        timeout: float = 5.0,
        epoch: str | None = None,
    ) -> None:
        if retention < 1:
            raise ValueError(f"retention must be at least 1 entry, not {retention}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.keys = StreamKeys.for_name(name)
        self.retention = retention
        self.timeout = timeout
        self.epoch = epoch
        # Never entered: coredis's reading of the URL (host, port, db, credentials), whose
        # connection class and arguments make this adapter's connections.
        self._pool = ConnectionPool.from_url(url, connect_timeout=timeout)
        self._connection: BaseConnection | None = None
        self._stream_key = self.keys.stream.encode()
        self._script_keys = self.keys.script_keys()
        self._exit = AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Self:
        self._nursery = await self._exit.enter_async_context(trio.open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
            self._connection = None
            await self._exit.aclose()

    async def append(self, batch: Batch) -> int | None:
        return (await self.append_many([batch]))[0]

    async def append_many(self, batches: list[Batch]) -> list[int | None]:
        """Append one hub's ``batches``, in order, in one round trip; each one's first seq, or
        None for a resend dropped. One hub's appends must not overlap: a batch numbered at or
        below the last one appended for its hub is a resend. An append that raised
        BrokerUnavailable may still have landed; appending it again is safe."""
        # The epoch is used only if this call creates the stream, and is drawn anew for each
        # call: a stream recreated by this same adapter (a Redis restarted empty) must never
        # get the epoch its readers pinned, or they would read its entries as the old ones'.
        args = script_args(batches, self.retention, uuid.uuid4().hex)
        with _boundary(self.timeout):
            try:
                firsts = await self._call(b"EVALSHA", SCRIPT_SHA, 4, *self._script_keys, *args)
            except coredis.exceptions.NoScriptError:  # a restarted server forgot it: EVAL loads it
                firsts = await self._call(b"EVAL", APPEND_SCRIPT, 4, *self._script_keys, *args)
        if not isinstance(firsts, list) or len(firsts) != len(batches):
            raise TypeError(f"the append script returned {firsts!r}")
        return [first if isinstance(first, int) and first > 0 else None for first in firsts]

    async def read(self, expected: int, block: float) -> list[Entry]:
        if expected < 1:
            raise ValueError(f"seqs start at 1, not {expected}")
        # BLOCK 0 would wait forever: no BLOCK at all is a poll.
        wait: tuple[bytes | int, ...] = (
            (b"BLOCK", max(1, math.ceil(block * 1000))) if block > 0 else ()
        )
        with _boundary(self.timeout + max(block, 0.0)):
            reply = await self._call(
                b"XREAD",
                *(b"COUNT", READ_COUNT, *wait),
                *(b"STREAMS", self._stream_key, entry_id(expected - 1)),
            )
        found = reply.get(self._stream_key) if isinstance(reply, dict) else None
        if not found:
            counter, current = await self._position()
            check_position(expected, counter, self.epoch, current)
            return []
        entries, self.epoch = follow_on(expected, self.epoch, xread_entries(found))
        return entries

    async def tail(self) -> int:
        """The next seq, and (re)pin the stream's epoch: a hub starting here starts over."""
        counter, current = await self._position()
        self.epoch = current
        return counter + 1

    async def ping(self) -> None:
        """One round trip (for measuring the client: bench/redis_calls.py)."""
        with _boundary(self.timeout):
            await self._call(b"PING")

    async def _position(self) -> tuple[int, str | None]:
        """The counter (last seq handed out, 0 if none) and the epoch, read atomically."""
        with _boundary(self.timeout):
            reply = await self._call(b"MGET", self.keys.counter, self.keys.epoch)
        if not isinstance(reply, list) or len(reply) != 2:
            raise TypeError(f"MGET returned {reply!r}")
        counter, epoch = reply
        return (int(counter) if counter is not None else 0), (
            epoch.decode() if isinstance(epoch, bytes) else None
        )

    async def _call(self, command: bytes, *args: RedisValueT) -> ResponseType:
        """One request on the connection (connecting first if there is none). A request cut
        short (a timeout) drops the connection: its reply may still come, and the next request
        must not read it as its own."""
        connection = await self._connect()
        request = connection.create_request(
            command, *args, decode=False, disconnect_on_cancellation=True
        )
        return await request

    async def _connect(self) -> BaseConnection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._nursery is None:
            raise RuntimeError("RedisStream used outside its `async with` block")
        pool = self._pool
        # The pool's class matches its location (TCP or a unix socket): one URL made both.
        location: Any = pool.location
        connection = pool.connection_class(location, **pool.connection_kwargs)
        # Runs until the connection ends; its requests fail with ConnectionError then.
        await self._nursery.start(partial(connection.run))
        self._connection = connection
        return connection


def xread_entries(found: object) -> Iterator[tuple[str, Entry]]:
    """The entries of one stream in a raw XREAD reply: ``[[id, [field, value, ...]], ...]``."""
    if not isinstance(found, list):
        raise Gap(0, None, f"XREAD answered {type(found).__name__}, not a list of entries")
    for item in found:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
            raise Gap(0, None, f"XREAD answered an entry that is not [id, fields]: {item!r:.80}")
        identifier, flat = item
        values = iter(flat)
        yield parse_entry(identifier, dict(zip(values, values, strict=False)))


@contextmanager
def _boundary(seconds: float) -> Iterator[None]:
    """Where coredis and OS errors become BrokerUnavailable, an error reply BrokerRefused (in
    Redis's own words), and a call past its deadline (a server that stopped answering, e.g.
    SIGSTOPped or behind a cut link) BrokerUnavailable too."""
    with trio.move_on_after(seconds) as scope:
        try:
            yield
        except coredis.exceptions.ResponseError as error:
            raise BrokerRefused(f"redis answered: {error_reply(error)}") from error
        except _UNAVAILABLE as error:
            raise BrokerUnavailable(f"redis: {error!r}") from error
    if scope.cancelled_caught:
        raise BrokerUnavailable(f"redis did not answer within {seconds:g} s")
