"""The NATS JetStream adapter of the broker bridge (docs/scale-out.md), under asyncio: nats-py
is asyncio only, so the NATS bridge process runs an asyncio loop and this module never imports
trio.

One stream ``STEREO_{name}`` on the subjects ``stereo.{name}.*``, one per hub (its hub id); one
message per append call: a batch, or the run of one hub's batches that piled up while the last
append was under way (numbered as the last of them), so that the appends keep up with the hub
at one round trip each.

**Numbering.** JetStream numbers messages (entries), not frames, and a publisher cannot learn
the global frame count atomically, so every frame's global seq is written into its entry when it
is appended, by optimistic concurrency: an appender knows the stream seq of the last entry and
the global seq after it, publishes with ``Nats-Expected-Last-Sequence`` set to that stream seq
and ``Stereo-First`` set to that global seq, and the server refuses the append (error 10071) if
another entry got in first; the appender then reads the new last entry and retries. So the
frames of successive entries are numbered consecutively without gaps or overlaps, every reader
computes the same numbers (they are in the headers), and a reader checks each entry's first seq
against the previous entry's last, so any hole stays visible. One appender pays no extra round
trip (it remembers where its own last append left the stream); concurrent appenders pay two round
trips per lost race (the refused publish and the read of the new last entry), but an appender
starts from where its own reader has read (a bridge reads every hub's entries as they come), so
a race is lost only to an entry appended while the reader had not got it. Schemes that need
no coordination, such as ``(stream seq << 16) + i``, break "consecutive" and were not taken.

**Reading** is by direct get per stream seq, many in flight at once. A stream info says how
far the stream reaches and makes trimming visible: JetStream silently starts a consumer at its
first sequence when asked for an earlier one, so a position below ``first_seq`` raises Gap here,
as does a stream that is gone or was recreated (its creation time changed). What an info said
exists is read without another (a known entry gone since is a Gap too); a reader at the end asks
for one. A reader that is caught up waits on a subscription opened before the info it compares
against, so no append slips between the check and the wait: the stream republishes each entry
once stored (RePublish, stream seq in a header), and that feed hands the waiting reader its
entry with no round trip; a reader in step with it (its newest is what was read last) waits on
it again without an info, which is asked when the feed is not in step and after a quiet wait.
A stream made by an older stereo has no feed: the bell is then the publishes themselves (maybe
refused), a ring is got at once (one round trip), and if not there an info says where the
stream is.

**Idempotence.** A batch may be appended and its acknowledgement lost (the connection dropped,
the call timed out, the bridge killed before it told the hub), and the hub resends it, maybe
long after: the broker away for minutes, past ``--bridge-timeout``, keeps the hub's batches
waiting. ``Nats-Msg-Id`` drops a resend only within the stream's duplicate window (120 s by
default; past it the server appends the same message ID again, checked against nats-server
2.9). So the adapter does not lean on it: each hub appends to its own subject, and a hub's
batch numbers grow in the stream (one appender per hub, in order), so the last message on that
subject says which batch numbers are in (all up to its number, however the batches were
grouped into messages). Whenever the outcome of this adapter's last append for
a hub is unknown (a fresh adapter, or any failure of an append call), it reads that message
before publishing, and drops a batch numbered at or below it; an append whose publish then
loses a race reads it again, since an earlier publish of the same batch on a dropped connection
may be what got in first (a stale publish that comes later is refused by its expected last
sequence). Once an append is acknowledged the adapter knows, so the steady state pays nothing.
What is left to the duplicate window is a hub whose last entry was already trimmed away by
``retention`` when it resends: a hub that far behind has its position trimmed too.

The connection, made on first use and dropped on any error, is :mod:`.jetstream_link`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.api import StreamInfo as _StreamInfo

from .broker import Batch, BrokerUnavailable, Entry, Gap, check_follows
from .jetstream_headers import (
    MalformedEntry,
    decode_entry,
    encode_headers,
    every_hub,
    hub_subject,
    merge,
    next_seq,
    stored_subjects,
    stream_names,
)
from .jetstream_link import StreamLink
from .jetstream_stored import Stored
from .jetstream_stream import StreamMismatch, stream_config_problems

__all__ = ["JetStream", "StreamMismatch", "stream_config_problems"]

_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a refused expected-last-sequence


class JetStream(StreamLink):
    """A :class:`~stereo.bridge.broker.Broker` on a JetStream stream. Not safe for concurrent
    calls of the same method on one instance (the bridge appends in order and reads in order);
    append and read may run concurrently."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        retention: int,
        timeout: float = 5.0,
        duplicate_window: float = 120.0,
        read_batch: int = 256,
    ) -> None:
        if not url.startswith("nats://"):
            raise ValueError(f"{url!r}: expected nats://HOST:PORT")
        if retention < 1 or timeout <= 0 or duplicate_window <= 0 or read_batch < 1:
            raise ValueError("retention, timeout, duplicate_window and read_batch must be > 0")
        stream, self.prefix = stream_names(name)
        names = (stream, every_hub(self.prefix), stored_subjects(self.prefix))
        super().__init__(url, names, retention, timeout, duplicate_window)
        self.read_batch = read_batch
        self.conflicts = 0  # appends refused because another appender got in first
        # Appender: (stream seq of the last entry, global seq after it), None to be read again.
        self._head: tuple[int, int] | None = None
        # Per hub, the last batch number known to be in the stream; absent while unknown (a
        # fresh adapter, or an append whose outcome is unknown): then read from the stream.
        self._appended: dict[str, int] = {}
        # Reader: (the next global seq, the stream seq of the entry that should carry it).
        self._cursor: tuple[int, int] | None = None
        # Reader: the stream seqs up to this one are known to exist, from a stream info on the
        # current connection (0: none yet), so reading them needs no info first.
        self._known_last = 0
        self._read_created: datetime.datetime | None = None
        # The reader's bell: rung by every entry the stream republishes once stored (kept in
        # _stored), or by every publish on its subjects if it does not republish, on a
        # subscription of the current connection (None: not subscribed on it yet).
        self._bell = asyncio.Event()
        self._bell_on: tuple[Client, str] | None = None
        self._stored = Stored(limit=4 * read_batch, retention=retention)

    def _dropped(self) -> None:
        self._known_last = 0  # a new connection checks the stream (gone? recreated?) again
        self._stored.forget()

    # -- append -------------------------------------------------------------------------------

    async def _last_entry(self, js: JetStreamContext) -> tuple[int, int]:
        """(stream seq of the last entry, the global seq after it); (last seq, 1) when empty."""
        for _ in range(3):
            try:
                msg = await js.get_last_msg(self.stream, self.subject, direct=self._direct)
                break
            except nats.js.errors.NotFoundError:
                info = await self._ensure_stream(js)
                # Empty when asked, but another hub may have appended since: its entry numbers
                # from 1, and a tail of (its stream seq, 1) would make the next reader see a
                # gap. Only a stream still empty in this info is empty.
                if info.state.messages == 0:
                    return info.state.last_seq, 1
        else:
            # Not empty, yet no last message (a replica behind its leader?): try again later.
            raise BrokerUnavailable(f"{self.stream}: the last entry cannot be read")
        if msg.seq is None:
            raise MalformedEntry("a stored message without its stream seq")
        return msg.seq, next_seq(decode_entry(msg.headers, msg.data))

    async def _hub_last(self, js: JetStreamContext, hub_subject: str) -> int:
        """The number of the last batch on ``hub_subject`` in the stream (0 if none)."""
        try:
            msg = await js.get_last_msg(self.stream, hub_subject, direct=self._direct)
        except nats.js.errors.NotFoundError:
            return 0
        return decode_entry(msg.headers, msg.data).number

    async def append(self, batch: Batch) -> int | None:
        """See Broker.append. Also raises MalformedEntry if the stream's last message is not
        stereo's (its successor's seqs cannot be computed) and StreamMismatch."""
        return await self.append_many([batch])

    async def append_many(self, batches: Sequence[Batch]) -> int | None:
        """One hub's consecutive ``batches``, those not appended before, as one entry (one
        message: a round trip, and at most one lost race, for all of them); the entry's first
        seq, or None if every one of them was appended before. As :meth:`append` otherwise."""
        hub_id = batches[-1].hub_id
        self._follow_reader()
        try:
            return await self._append(hub_id, batches)
        except BaseException:
            # Published or not, nobody knows: the next append of this hub reads the stream.
            self._appended.pop(hub_id, None)
            raise

    def _follow_reader(self) -> None:
        """Move the appender's idea of the last entry up to where the reader has read: with
        several hubs, the entries of the others are read as they come, so a known head that
        the reader has passed would lose the race for sure (a refused publish and a read of the
        last entry: two round trips). Never when unknown (None): a head that lost a race is
        read from the stream, not taken again from a reader that may be behind it."""
        if self._head is None or self._cursor is None:
            return
        expected, start = self._cursor  # the entry at ``start - 1`` ends at ``expected - 1``
        if start - 1 > self._head[0]:
            self._head = (start - 1, expected)

    async def _append(self, hub_id: str, batches: Sequence[Batch]) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        subject = hub_subject(self.prefix, hub_id)
        known = hub_id in self._appended
        with self._unavailable():
            js = await self._connect()
            while True:
                if not known:  # every time round: what got in first may be these very batches
                    self._appended[hub_id] = await self._hub_last(js, subject)
                # Appended before (a resend): numbered then, not now.
                fresh = [batch for batch in batches if batch.number > self._appended[hub_id]]
                if not fresh:
                    return None
                batch = merge(fresh)
                if self._head is None:
                    self._head = await self._last_entry(js)
                after, first = self._head
                try:
                    ack = await js.publish(
                        subject, batch.frames, headers=encode_headers(batch, first, after)
                    )
                except nats.js.errors.NoStreamResponseError:
                    # The stream is gone (a server restarted without its store): a new one
                    # numbers from 1 again, which readers see as a Gap.
                    self._head = None
                    await self._ensure_stream(js)
                    continue
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise
                    self.conflicts += 1
                    self._head = None  # and, if unknown, the hub's last batch is read again
                    if loop.time() > deadline:
                        raise BrokerUnavailable(
                            f"{self.stream}: other appenders kept getting in first for "
                            f"{self.timeout} s"
                        ) from exc
                    continue
                self._appended[hub_id] = batch.number
                if ack.duplicate:
                    return None  # appended before (a resend): numbered then, not now
                self._head = (ack.seq, first + batch.count)
                return first

    # -- read ---------------------------------------------------------------------------------

    async def _read_info(self, js: JetStreamContext, expected: int) -> _StreamInfo:
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise Gap(expected, None, f"stream {self.stream} is gone") from None
        if self._read_created is None:
            self._read_created = info.created
        elif info.created != self._read_created:
            raise Gap(expected, None, f"stream {self.stream} was recreated")
        return info

    async def _entry_at(self, js: JetStreamContext, seq: int, expected: int) -> Entry | None:
        """The entry at stream seq ``seq``; None if it is gone (trimmed, deleted)."""
        try:
            msg = await js.get_msg(self.stream, seq, direct=self._direct)
        except nats.js.errors.NotFoundError:
            return None
        return self._decode(msg, seq, expected)

    async def _existing_entry_at(self, js: JetStreamContext, seq: int, expected: int) -> Entry:
        entry = await self._entry_at(js, seq, expected)
        if entry is None:
            raise Gap(expected, None, f"stream seq {seq} was trimmed or deleted")
        return entry

    @staticmethod
    def _decode(msg: RawStreamMsg, seq: int, expected: int) -> Entry:
        if msg.seq != seq:
            raise Gap(expected, None, f"asked for stream seq {seq}, got {msg.seq}")
        try:
            return decode_entry(msg.headers, msg.data)
        except MalformedEntry as exc:
            raise Gap(expected, None, f"stream seq {seq}: {exc}") from exc

    async def _locate(self, js: JetStreamContext, expected: int, info: _StreamInfo) -> int:
        """The stream seq of the entry that starts at global seq ``expected`` (or the next
        stream seq, if ``expected`` is the tail). Binary search over the stream: the first
        seqs in the headers grow with the stream seq."""
        first, last = info.state.first_seq, info.state.last_seq
        if last == 0 or first > last:
            if expected != 1:
                raise Gap(expected, 1, "the stream is empty (recreated?)")
            return last + 1
        newest = await self._existing_entry_at(js, last, expected)
        if expected == newest.last_seq + 1:
            return last + 1
        if expected > newest.last_seq:
            raise Gap(expected, newest.last_seq + 1, "the stream ends before this seq")
        lo, hi = first, last  # the entry holding ``expected`` is in [lo, hi], or was trimmed
        while lo < hi:
            mid = (lo + hi + 1) // 2
            entry = await self._entry_at(js, mid, expected)
            # None: trimmed since the info, so everything up to ``mid`` is gone, and so is
            # ``expected`` unless it is above; the checks after the search tell which.
            if entry is None or entry.first_seq <= expected:
                lo = mid
            else:
                hi = mid - 1
        found = await self._existing_entry_at(js, lo, expected)
        if found.first_seq > expected:
            raise Gap(expected, found.first_seq, "trimmed past the retention")
        if found.first_seq != expected:
            raise Gap(expected, found.first_seq, "this seq is inside an entry")
        return lo

    def _check_start(self, expected: int, start: int, info: _StreamInfo) -> None:
        """Whether stream seq ``start`` can still be read, by ``info``; what it says exists is
        then known to (reads of it need no info until the connection changes)."""
        if start < info.state.first_seq:
            raise Gap(expected, None, "trimmed past the retention")
        if start > info.state.last_seq + 1:
            raise Gap(expected, None, "the stream went backwards (recreated?)")
        self._known_last = info.state.last_seq

    async def _fetch(self, js: JetStreamContext, expected: int, start: int) -> list[Entry]:
        """The entries from stream seq ``start`` on that are known to exist (up to
        ``read_batch``), fetched at once; one of them missing is a Gap."""
        stop = min(self._known_last, start + self.read_batch - 1)
        seqs = range(start, stop + 1)
        got = await asyncio.gather(
            *(js.get_msg(self.stream, seq, direct=self._direct) for seq in seqs),
            return_exceptions=True,
        )
        entries: list[Entry] = []
        for seq, msg in zip(seqs, got, strict=True):
            if isinstance(msg, nats.js.errors.NotFoundError) and entries:
                break  # trimmed since the info: hand over what came, the next read says Gap
            if isinstance(msg, nats.js.errors.NotFoundError):
                raise Gap(expected, None, f"stream seq {seq} was trimmed or deleted")
            if isinstance(msg, BaseException):
                raise msg
            entries.append(self._advance(msg, seq, expected))
            expected = entries[-1].last_seq + 1
        return entries

    def _advance(self, msg: RawStreamMsg, seq: int, expected: int) -> Entry:
        """The entry of ``msg``, read at stream seq ``seq`` for global seq ``expected``; the
        reader's position moves past it."""
        entry = self._decode(msg, seq, expected)
        check_follows(expected, entry)
        self._cursor = (entry.last_seq + 1, seq + 1)
        return entry

    def _take_stored(self, expected: int, start: int) -> list[Entry]:
        """The entries the stream republished from stream seq ``start`` on: no round trip."""
        entries: list[Entry] = []
        for seq, headers, data in self._stored.take(start):
            msg = RawStreamMsg(seq=seq, headers=dict(headers or {}), data=data)
            entries.append(self._advance(msg, seq, expected))
            expected = entries[-1].last_seq + 1
        return entries

    async def read(self, expected: int, block: float) -> list[Entry]:
        with self._unavailable():
            js = await self._connect()
            await self._listen()
            # Silenced before the info: an append after it rings again.
            self._bell.clear()
            if self._cursor is not None and self._cursor[0] == expected:
                start = self._cursor[1]
                if entries := self._take_stored(expected, start):
                    return entries
                if start <= self._known_last:  # behind: no need to ask how far the stream is
                    return await self._fetch(js, expected, start)
                if block > 0 and self._republished and self._stored.newest == start - 1:
                    # The feed's newest is what was read last: wait for it (an info after).
                    return await self._wait(js, expected, start, block)
                info = await self._read_info(js, expected)
            else:
                self._stored.forget()  # kept for another position
                info = await self._read_info(js, expected)
                start = await self._locate(js, expected, info)
                self._cursor = (expected, start)
            self._check_start(expected, start, info)
            if start > info.state.last_seq and block > 0:
                return await self._wait(js, expected, start, block)
            return await self._fetch(js, expected, start)

    async def _listen(self) -> None:
        """Subscribe the bell on the current connection (flushed: the server has it), once:
        to what the stream republishes, or else to what is published to it."""
        nc = self._nc
        assert nc is not None
        feed = self._republished
        subject = self.stored_subject if feed else self.subject
        if self._bell_on == (nc, subject):
            return

        async def ring(msg: Msg) -> None:
            if feed:
                self._stored.put(msg.headers, msg.data)
            self._bell.set()

        await nc.subscribe(subject, cb=ring)
        await nc.flush(timeout=max(1, round(self.timeout)))
        self._bell_on = (nc, subject)

    async def _wait(
        self, js: JetStreamContext, expected: int, start: int, block: float
    ) -> list[Entry]:
        """Up to ``block`` seconds for stream seq ``start`` to exist (the bell was silenced
        before the info that said it does not). A ring is most often that very entry: as the
        stream republished it (no round trip), or asked for at once (one); not there (the ring
        was a publish the stream refused, or one it has not stored yet), a fresh info says
        where the stream is, and the wait goes on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._bell.wait()
            rung = self._bell.is_set()
            self._bell.clear()  # before the get: an append after it rings again
            if rung and (entries := self._take_stored(expected, start)):
                return entries
            if rung:
                try:
                    msg = await js.get_msg(self.stream, start, direct=self._direct)
                except nats.js.errors.NotFoundError:
                    pass
                else:
                    return [self._advance(msg, start, expected)]
            info = await self._read_info(js, expected)
            self._check_start(expected, start, info)
            if start <= info.state.last_seq:
                return await self._fetch(js, expected, start)
            if loop.time() >= deadline:
                return []

    async def tail(self) -> int:
        with self._unavailable():
            js = await self._connect()
            info = await self._ensure_stream(js)
            # Where a fresh reader starts is also the incarnation of the stream it reads.
            self._read_created = info.created
            last, after = await self._last_entry(js)
            self._stored.forget()  # kept for another position, maybe of another stream
            self._cursor = (after, last + 1)
            return after
