"""The object an app's ``serve(worker)`` receives: identity, listeners, and broadcast in and out.

Only the public API lives here. The state the runtime drives is in the two objects a ``Worker``
holds: its hub connection's :class:`~stereo.outbox.Outbox` (what it broadcasts) and its
:class:`~stereo.worker.inbox.Inbox` (what it receives, and the :class:`MessageStream` iterators).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2
import trio

from ..outbox import Outbox
from ..pool.client import DEFAULT_POOL, PoolClient
from ..wire.nesting import MAX_DEPTH
from ..wire.protocol import Kind, encode_broadcast, encode_cbor, frame_broadcast, refuse_too_deep
from .inbox import CHECKPOINT_EVERY, Inbox, MessageStream
from .listeners import ConnectionTracker, Listener

__all__ = ["MessageStream", "Worker", "WorkerStatistics"]

T = TypeVar("T")

dumps = cbor2.dumps
_frame = frame_broadcast
_BROADCAST = Kind.BROADCAST.value


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    sent: int
    received: int
    discarded: int
    outbox_bytes: int
    open_connections: int


class Worker:
    """Handed to ``serve(worker)`` in every worker process.

    The runtime builds it around the hub connection's ``outbox`` and ``inbox``, and drives those
    (tests can build one around an ``Outbox(None, ...)`` and drive them by hand).
    """

    def __init__(
        self,
        worker_id: int,
        listeners: list[Listener],
        tracker: ConnectionTracker,
        max_message_size: int,
        outbox: Outbox,
        inbox: Inbox,
    ) -> None:
        self.id = worker_id
        self.listeners = listeners
        self.max_message_size = max_message_size
        # Payloads up to this size need no check: under the size limit, and too short to nest
        # deeper than the receivers decode.
        self._check_above = min(max_message_size, MAX_DEPTH)
        #: Set when the master asked this worker to stop (graceful drain has begun).
        self.stopping = trio.Event()
        self._tracker = tracker
        self._outbox = outbox
        self._inbox = inbox
        self._since_checkpoint = 0
        self._sent = 0
        #: The job pool's caller side (the runtime feeds it the pool's frames).
        self.jobs = PoolClient(outbox, max_message_size)

    @property
    def _hub_sock(self) -> socket.socket | None:
        """The hub connection's plain socket (None without a hub), for test apps that must
        misbehave on it on purpose."""
        return self._outbox.sock

    # -- sending -----------------------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        try:
            payload = dumps(value)
        except Exception:
            payload = encode_cbor(value)  # raises EncodeError with the reason
        if len(payload) > self._check_above:
            if len(payload) > self.max_message_size:
                encode_broadcast(payload, self.max_message_size)  # raises MessageTooLarge
            refuse_too_deep(payload)  # raises EncodeError
        return _frame(payload, _BROADCAST)

    def broadcast_nowait(self, value: Any) -> None:
        """Queue ``value`` for every worker; raise :class:`trio.WouldBlock` if the outbox is full.

        Raises MessageTooLarge or EncodeError (and sends nothing) for a value that cannot go out.
        """
        frame = self._encode(value)
        outbox = self._outbox
        if not outbox.offer(frame):
            if outbox.error is not None:
                raise outbox.error
            raise trio.WouldBlock
        self._sent += 1

    async def broadcast(self, value: Any) -> None:
        """Send ``value`` to every worker (this one included), waiting while the outbox is full.

        Yields to the scheduler every few calls rather than every call, so a burst of broadcasts
        leaves in one write instead of one system call each.
        """
        frame = self._encode(value)
        if not self._outbox.offer(frame):
            self._since_checkpoint = 0  # waiting for room checkpoints (or raises HubClosed)
            await self._outbox.wait_for_room(len(frame))
            self._outbox.send(frame)
        self._sent += 1
        count = self._since_checkpoint + 1
        if count < CHECKPOINT_EVERY:
            self._since_checkpoint = count
        else:
            self._since_checkpoint = 0
            await trio.lowlevel.checkpoint()

    # -- the job pool ------------------------------------------------------------------------

    async def run_sync(
        self,
        fn: Callable[..., T],
        *args: Any,
        pool: str = DEFAULT_POOL,
        kill_on_cancel: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a pool process (``stereo run --pool N``) and return
        its result, or raise what it raised (its remote traceback as ``__cause__``).

        ``fn`` travels by module and qualified name, arguments and result pickled (docs/pool.md).
        Waits while this worker has as many jobs in flight as the pool takes. Cancelled before
        the job started, it never runs; once it runs, it finishes unless ``kill_on_cancel``, which
        kills its pool process (the master starts another).
        """
        return await self.jobs.run_sync(fn, args, kwargs, pool=pool, kill_on_cancel=kill_on_cancel)

    # -- receiving ---------------------------------------------------------------------------

    def messages(self, *, limit: int | None = None) -> MessageStream:
        """Subscribe now; iterate to receive every later broadcast in order.

        ``async for`` over it yields to the scheduler every few messages rather than every one
        (and whenever it waits for the next), like :meth:`broadcast`.
        """
        return self._inbox.subscribe(limit)

    # -- introspection -----------------------------------------------------------------------

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            sent=self._sent,
            received=self._inbox.received,
            discarded=self._inbox.discarded,
            outbox_bytes=self._outbox.queued_bytes,
            open_connections=self._tracker.open,
        )
