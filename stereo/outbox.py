"""Outgoing bytes for one connection, shared by both ends of the hub: the master's relay toward
each worker (:class:`stereo.master.peer.Peer`) and each worker toward the master.

:class:`Outbox` is the bounded queue and its writer; :func:`send_chunks` the socket writing under
it. The two ends differ only in policy, which they choose through the outbox's parameters and
methods: the master cuts off a peer whose outbox overflows (what :meth:`~Outbox.put` returns), a
worker's app waits for room (:meth:`~Outbox.wait_for_room`); a worker spaces its direct sends
(``direct_gap``).
"""

from __future__ import annotations

import math
import socket
import sys
import time
from typing import NoReturn, Protocol

import trio

JOIN_LIMIT = 64 * 1024  # below this, one joined copy is cheaper than a scatter/gather write
# Chunks smaller than this on average are joined whatever the total: an iovec (and a memoryview)
# per 100-byte frame costs more than copying it.
GATHER_ABOVE = 16 * 1024
IOV_MAX = 1024  # Linux's limit on buffers per sendmsg

_monotonic = time.monotonic


# Sends closer together than this are batched by the writer task instead of written at once: a
# lone send goes straight to the socket (saves a task switch of latency), in a burst only the
# first does and the rest leave in one write. What a worker's hub connection and a WebSocket
# session pass as ``direct_gap``.
DIRECT_SEND_GAP = 50e-6


class _Sender(Protocol):
    def send(self, data: bytes, /) -> int: ...


class _NoSocket:
    """The sender of an outbox without a socket: it takes nothing, so everything is queued."""

    def send(self, data: bytes, /) -> int:
        return 0


class Outbox:
    """Byte chunks waiting to be written to one connection, in order, by one writer task.

    A chunk goes straight to the plain socket when nothing is queued or being written (no task
    switch on the way); what the socket does not take at once is queued, so bytes never overtake
    each other. :meth:`write_loop` then writes everything queued since its last wake-up with one
    :func:`send_chunks`.

    Two byte counts: ``queued_bytes``, not yet taken by the writer, decides whether a chunk
    :meth:`fits`: the batch being written does not count, so a sender fills the next batch
    meanwhile. :attr:`pending_bytes` adds that batch: every byte held, the quantity the master
    bounds for each peer.
    """

    def __init__(
        self, sock: socket.socket | None, limit: int = sys.maxsize, *, direct_gap: float = 0.0
    ) -> None:
        #: The connection's plain socket, for direct sends (None: always queue, as in tests).
        self.sock = sock
        # Never None, so a direct send needs no test (and `self._sender.send(...)` is faster than
        # a bound method kept in an attribute).
        self._sender: _Sender = sock if sock is not None else _NoSocket()
        self.limit = limit
        #: :meth:`send` writes directly only if the last direct send is older than this (s):
        #: in a burst only the first chunk does, the rest leave in one write from the writer.
        self.direct_gap = direct_gap
        self.chunks: list[bytes] = []
        self.queued_bytes = 0
        self.in_flight = 0  # bytes the writer took and is writing: nonzero means busy
        self.bytes_written = 0
        #: Set by :meth:`close`: what :meth:`wait_for_room` raises from then on.
        self.error: Exception | None = None
        self._peak = 0
        self._last_direct = -math.inf
        # Invariant: _ready is set whenever chunks is not empty (the writer's wake-up call).
        self._ready = trio.Event()
        self._room = trio.Event()
        self._flushed = trio.Event()

    @property
    def pending_bytes(self) -> int:
        return self.queued_bytes + self.in_flight

    @property
    def peak_bytes(self) -> int:
        # Pending bytes only grow between a write's end and clear(), the two places that record
        # the peak: nothing per chunk.
        return max(self._peak, self.pending_bytes)

    def fits(self, size: int) -> bool:
        """A chunk of ``size`` bytes may be queued (an empty outbox takes any chunk)."""
        return not self.queued_bytes or self.queued_bytes + size <= self.limit

    # -- adding bytes (no checkpoints: the relay appends one batch to every outbox at once) -----

    def put(self, chunk: bytes) -> bool:
        """Queue ``chunk`` for the writer, whatever the limit; return whether the outbox now
        holds more than its limit (the master cuts such a peer off)."""
        chunks = self.chunks
        if not chunks:
            self._ready.set()
        chunks.append(chunk)
        self.queued_bytes += len(chunk)
        return self.queued_bytes + self.in_flight > self.limit

    def send_now(self, chunk: bytes) -> None:
        """Write what the socket takes at once and queue the rest. Only when nothing is queued
        or being written, so bytes never overtake each other. Raises OSError (nothing queued)
        when the connection is broken."""
        try:
            sent = self._sender.send(chunk)
        except BlockingIOError:
            sent = 0
        self.bytes_written += sent
        if sent < len(chunk):
            self.put(chunk[sent:] if sent else chunk)

    def send(self, chunk: bytes) -> None:
        """Queue ``chunk``, or write it at once when the outbox is idle and the last direct send
        is older than ``direct_gap``. Never raises: on a broken connection the chunk is queued,
        and the writer meets the same error and reports it."""
        chunks = self.chunks
        if chunks:  # put() inlined: in a burst, this is the path taken per chunk
            chunks.append(chunk)
            self.queued_bytes += len(chunk)
            return
        if not self.in_flight and self.sock is not None:
            gap = self.direct_gap
            now = _monotonic() if gap else 0.0
            if not gap or now - self._last_direct > gap:
                self._last_direct = now
                try:
                    self.send_now(chunk)
                except OSError:
                    pass  # queued below instead
                else:
                    return
        self.put(chunk)

    def offer(self, chunk: bytes) -> bool:
        """:meth:`send` ``chunk`` if the outbox is open and the chunk :meth:`fits`; else return
        False and send nothing (the caller waits for room, or gives up)."""
        queued = self.queued_bytes
        if queued:  # a burst: fits() and the queueing inlined, as this runs per chunk
            queued += len(chunk)
            if queued > self.limit or self.error is not None:
                return False
            self.chunks.append(chunk)
            self.queued_bytes = queued
            return True
        if self.error is not None:
            return False
        self.send(chunk)
        return True

    # -- the writer's side ---------------------------------------------------------------------

    def take(self) -> list[bytes]:
        """Hand every queued chunk to the writer (they count as in flight until it is done)."""
        chunks, self.chunks = self.chunks, []
        self.in_flight = self.queued_bytes
        self.queued_bytes = 0
        self._ready = trio.Event()
        self._room.set()
        return chunks

    async def write_loop(self, stream: trio.SocketStream) -> NoReturn:
        """Write the outbox to ``stream`` until cancelled: one :func:`send_chunks` per wake-up,
        with everything queued since the last one. Raises what the stream raises."""
        while True:
            await self._ready.wait()
            if not self.chunks:  # cleared since it was set
                self._ready = trio.Event()
                continue
            size = await send_chunks(stream, self.take())
            self._peak = max(self._peak, self.pending_bytes)
            self.in_flight = 0
            self.bytes_written += size
            if not self.chunks:
                self._flushed.set()

    async def wait_flushed(self) -> None:
        """Wait until everything queued so far has been handed to the kernel."""
        while self.chunks or self.in_flight:
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    # -- senders that wait, and the end ----------------------------------------------------

    async def wait_for_room(self, size: int) -> None:
        """Wait until a chunk of ``size`` bytes :meth:`fits`; raise the error the outbox was
        closed with, if it was."""
        while True:
            if self.error is not None:
                raise self.error
            if self.fits(size):
                return
            if self._room.is_set():  # a fresh event only once the last one fired: every
                self._room = trio.Event()  # sender waiting at once shares it, none is stranded
            await self._room.wait()

    def close(self, error: Exception) -> None:
        """The connection is gone: wake the senders waiting for room, to raise ``error``."""
        self.error = error
        self._room.set()

    def clear(self) -> None:
        """Drop everything queued (the connection is being closed)."""
        self._peak = self.peak_bytes
        self.chunks.clear()
        self.queued_bytes = 0


async def send_chunks(stream: trio.SocketStream, chunks: list[bytes]) -> int:
    """Write ``chunks`` in order, copying small ones into one buffer and gather-writing big ones
    (shared buffers, such as a relayed run, are not copied once per receiver). Returns the size.
    """
    if len(chunks) == 1:
        await stream.send_all(chunks[0])
        return len(chunks[0])
    size = sum(map(len, chunks))
    if size <= JOIN_LIMIT or size < GATHER_ABOVE * len(chunks):
        await stream.send_all(b"".join(chunks))
    else:
        await send_gathered(stream.socket, chunks)
    return size


async def send_gathered(sock: trio.socket.SocketType, chunks: list[bytes]) -> None:
    """Write every chunk, in order, with as few sendmsg calls as the kernel allows."""
    views = [memoryview(chunk) for chunk in chunks]
    first = 0
    while first < len(views):
        sent = await sock.sendmsg(views[first : first + IOV_MAX])
        while sent:
            head = views[first]
            if sent >= len(head):
                sent -= len(head)
                first += 1
            else:
                views[first] = head[sent:]
                sent = 0
