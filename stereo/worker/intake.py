"""Reading the master's byte stream into the worker's :class:`~stereo.worker.inbox.Inbox`.

Two kinds of task read the hub socket, one at a time. The hub reader task (:meth:`Intake.run`)
always can: it sees the end of the connection, the job pool's frames and broadcasts nobody
iterates while the app does something else, and it holds off while an iterator is full. An app
task waiting on an empty :class:`~stereo.worker.inbox.MessageStream` reads for itself instead
(:meth:`Intake.pump`, :meth:`Intake.lead`): the reader task woken by the socket and then waking
the app would cost a scheduler round and two task switches per wake-up, the largest part of a
broadcast's latency inside the worker.

Whoever reads delivers to every subscriber, so the order and the delivery rule do not depend on
who read. A read and its delivery happen with no checkpoint between them (the socket is read
with a plain non-blocking ``recv``), so a task cancelled while it waits for the socket has
taken nothing from it. An error met by an app task (the end of the connection, a bad frame) is
kept for the reader task to raise, so the worker ends the way it always does.
"""

from __future__ import annotations

import errno
import socket
from typing import NoReturn

import trio

from ..errors import HubClosed
from ..wire.protocol import BroadcastReader
from .inbox import Inbox

# One read's worth of broadcasts is decoded at once; the app then touches what it decoded. A
# read of 64 KiB (some 770 small broadcasts) keeps those objects in the CPU's cache: 256 KiB
# cost a batch consumer a fifth more per message, while a recv per 64 KiB is a few ns each.
RECEIVE_SIZE = 64 * 1024
# What the reader task reads while an iterator still holds messages: the app is draining them
# and reads for itself once it has. Reading a whole RECEIVE_SIZE ahead there grows the queue to
# its limit in a flood, and a queue of tens of thousands of decoded messages costs a third more
# per message than one that stays short; a slow consumer still fills its iterator to the
# limit, one small read per scheduler round.
TRICKLE_SIZE = 16 * 1024
CLOSED = "the master closed the hub connection"


class Intake:
    """The hub socket's read side: the reader task's loop, and the app's way in."""

    def __init__(self, sock: socket.socket, broadcasts: BroadcastReader, inbox: Inbox) -> None:
        sock.setblocking(False)  # reads must never block the trio loop
        self._sock = sock
        self._recv = sock.recv
        self._broadcasts = broadcasts
        self._inbox = inbox
        #: What a read met that ends the connection; the reader task raises it.
        self.error: BaseException | None = None
        # An app task is waiting on the socket: the reader task stays off it.
        self._leading = False
        # The reader task's wait on the socket (cancelled when an app task takes over), and the
        # event it parks on while an app task leads.
        self._reader_wait: trio.CancelScope | None = None
        self._reader_parked: trio.Event | None = None
        inbox.intake = self

    def can_read(self) -> bool:
        """May an app task read now: nobody else waits on the socket, no iterator is full?"""
        return not self._leading and self.error is None and not self._inbox.full()

    def pump(self, size: int = RECEIVE_SIZE) -> bool:
        """Read what the socket holds, without waiting, and deliver it; False if it held nothing
        (or the connection is over: :attr:`error`). Never yields."""
        broadcasts = self._broadcasts
        try:
            # A big frame under way: read the rest of it at once rather than 256 KiB at a time.
            data = self._recv(max(size, broadcasts.missing))
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(exc)
            return False
        if not data:
            self._fail(HubClosed(CLOSED))
            return False
        broadcasts.receive_data(data)
        self._deliver()
        return True

    def _deliver(self) -> None:
        try:
            messages = self._broadcasts.deliveries()
        except Exception as exc:  # ProtocolError, or whatever the pool's frame handler raised
            self._fail(exc)
            return
        if messages:
            self._inbox.deliver(messages, self._broadcasts.last_size)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            if isinstance(error, OSError) and error.errno == errno.EBADF:
                # As trio's streams report it: the descriptor was closed in this process.
                error = trio.ClosedResourceError("file descriptor closed")
            self.error = error
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader_wait is not None:
            self._reader_wait.cancel()
        if self._reader_parked is not None:
            self._reader_parked.set()

    async def lead(self) -> None:
        """Wait for the socket in the reader task's place, then read it (call only when
        :meth:`can_read`). Cancelled while it waits, it has read nothing."""
        self._leading = True
        if self._reader_wait is not None:
            # Withdraws the reader task's wait at once (a socket takes one waiter per
            # direction); it parks until this task is done.
            self._reader_wait.cancel()
        try:
            await trio.lowlevel.wait_readable(self._sock)
            self.pump()
        except OSError as exc:
            self._fail(exc)
        finally:
            self._leading = False
            if self._reader_parked is not None:
                self._reader_parked.set()

    async def run(self) -> NoReturn:
        """The hub reader task: read and deliver until the connection ends, then raise why."""
        inbox = self._inbox
        self._deliver()  # what arrived behind WELCOME
        while True:
            if self.error is not None:
                raise self.error
            if inbox.full():  # tested first: no coroutine per read when nothing is full
                await inbox.wait_for_room()
            elif self._leading:
                self._reader_parked = parked = trio.Event()
                try:
                    await parked.wait()
                finally:
                    self._reader_parked = None
            elif self.pump(TRICKLE_SIZE if inbox.backlogged() else RECEIVE_SIZE):
                await trio.lowlevel.checkpoint()
            elif self.error is None:
                with trio.CancelScope() as self._reader_wait:
                    try:
                        await trio.lowlevel.wait_readable(self._sock)
                    except OSError as exc:
                        self._fail(exc)
                self._reader_wait = None
