"""Reads and writes on a connected socket without trio's per-call scheduling.

A trio socket operation that succeeds at once still yields to the scheduler (a cancel-shielded
checkpoint) and goes through a conflict detector and an async context manager: on a minimal
request/response exchange that was a third of the server's time. Here a write that the kernel
takes whole costs one syscall, and a read waits only when there is nothing to read, through
:mod:`.readiness` (no epoll_ctl per wait). Scheduling stays fair: a read that waits is a
checkpoint, and a connection that keeps finding bytes ready (a client pipelining many requests)
checkpoints every ``FAIR_SHARE`` reads.
"""

from __future__ import annotations

import errno
import os

import trio

from . import readiness

FAIR_SHARE = 16
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)


class PeerGone(Exception):
    """The peer reset the connection, or we closed it under the write."""


class SocketIO:
    __slots__ = ("_eager", "_fd", "_full", "_ready_reads", "_waiter")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._fd = sock.fileno()
        self._ready_reads = 0
        self._eager = True  # try reading before waiting (cleared after we answered)
        self._full = False  # the last read filled the buffer: more may be there
        self._waiter = readiness.waiter()
        if self._waiter is not None:
            self._waiter.register(self._fd)

    def close(self) -> None:
        """Stop watching the socket (before it is closed or handed to other code)."""
        if self._waiter is not None:
            self._waiter.unregister(self._fd)
            self._waiter = None

    def expect_reply(self) -> None:
        """We just answered; the client cannot have sent its next request yet, unless it
        pipelines: wait for readability before trying to read (saves a failing syscall)."""
        self._eager = self._full

    async def receive(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at EOF or when the peer reset the connection."""
        fd = self._fd
        waited = False
        if not self._eager:
            waited = await self._wait(fd)
        while True:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                waited = await self._wait(fd)
                continue
            except OSError as exc:
                return self._failed_read(exc)
            self._full = len(data) == size
            self._eager = True
            if waited:
                self._ready_reads = 0
            else:
                self._ready_reads += 1
                if self._ready_reads >= FAIR_SHARE:
                    self._ready_reads = 0
                    await trio.lowlevel.checkpoint()
            return data

    async def _wait(self, fd: int) -> bool:
        """Wait for readability; False if there was no need (and so no checkpoint)."""
        try:
            if self._waiter is not None:
                return await self._waiter.wait_readable(fd)
            await trio.lowlevel.wait_readable(fd)
            return True
        except trio.ClosedResourceError:
            return True  # the read that follows reports it (EBADF: b"")

    @staticmethod
    def _failed_read(exc: OSError) -> bytes:
        if exc.errno in _GONE or exc.errno == errno.EBADF:
            return b""
        raise exc

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``; waits only when the socket's send buffer is full."""
        fd = self._fd
        view: memoryview | None = None
        while True:
            try:
                sent = os.write(fd, data if view is None else view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                if exc.errno in _GONE or exc.errno == errno.EBADF:
                    raise PeerGone(str(exc)) from exc
                raise
            if view is None:
                if sent == len(data):
                    return
                view = memoryview(data)
            view = view[sent:]
            if not view:
                return
            try:
                await trio.lowlevel.wait_writable(fd)
            except trio.ClosedResourceError as exc:
                raise PeerGone("closed") from exc
