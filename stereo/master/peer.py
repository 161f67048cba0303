"""The master's side of one worker process's hub connection (:class:`Peer`), and who its control
frames are for (:class:`PeerEvents`); :mod:`.hub` relays among the peers."""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
from typing import Any, Protocol

import trio

from ..outbox import Outbox
from ..snapshot import JobCounts, PeerStatistics
from ..wire.protocol import HubIngress
from .cplane import RelayOutbox


class PeerEvents(Protocol):
    """Who a peer's control frames are for: the hub relays broadcasts and nothing else, and
    hands the rest (the handshake's answer, readiness, heartbeats, a boot error) to the owner of
    the worker process (:class:`stereo.master.process.WorkerProcess`)."""

    def welcome(self) -> dict[str, Any]: ...
    def ready(self) -> None: ...
    def heartbeat(self) -> None: ...
    def boot_error(self, reason: str) -> None: ...


class Peer:
    """The master's side of one worker process's hub connection."""

    def __init__(
        self, worker_id: int, sock: socket.socket, max_message_size: int, events: PeerEvents
    ) -> None:
        self.worker_id = worker_id
        self.events = events
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        # The relay writes to the plain socket directly when nothing is queued for this peer
        # (no task switch per batch); the trio stream serves the reader and the outbox's writer.
        # Its bound is the hub's, set when the hub takes the peer in.
        self.outbox = Outbox(sock)
        self.ingress = HubIngress(worker_id, max_message_size)
        self.pid: int | None = None
        self.relay_id = 0  # its id in the C relay (cplane.py) while that relays it
        self.welcomed = trio.Event()
        self.ended = trio.Event()  # serve_peer returned: everything the worker sent was read
        self.truncated_bytes = 0  # an incomplete last frame, dropped at end of connection
        self.cut_off_reason: str | None = None
        self.cut_off_slow = False  # it fell behind (not a protocol error of its own)
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        # The job pool (pool_routes.py): its hub address, and for a pool process its pool's
        # name, what it last reported and whether it is leaving or left cleanly.
        self.address = 0
        self.pool: str | None = None
        self.pool_leaving = False
        self.pool_drained = False
        self.jobs_done = 0
        self.jobs_queued = 0

    @property
    def pending_bytes(self) -> int:
        """Queued for this worker plus being written: the bounded quantity."""
        return self.outbox.pending_bytes

    @property
    def peak_pending_bytes(self) -> int:
        return self.outbox.peak_bytes

    @property
    def bytes_out(self) -> int:
        return self.outbox.bytes_written

    def unread_bytes(self) -> int:
        """Bytes the worker sent that the master has not read yet (evidence not yet seen),
        counting a control frame the C relay read but trio has not handled as one."""
        try:
            raw = fcntl.ioctl(self.stream.socket.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0  # closed: nothing more will be read
        parked = isinstance(self.outbox, RelayOutbox) and self.outbox.awaiting_answer()
        return int.from_bytes(raw, sys.byteorder) + parked

    def job_counts(self) -> JobCounts:
        """A pool process's jobs, as it last reported them (every heartbeat)."""
        return JobCounts(done=self.jobs_done, queued=self.jobs_queued)

    def statistics(self) -> PeerStatistics:
        if isinstance(self.outbox, RelayOutbox):
            self.outbox.refresh()
        return PeerStatistics(
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            outbox_bytes=self.pending_bytes,
            peak_outbox_bytes=self.peak_pending_bytes,
            cut_off_reason=self.cut_off_reason,
        )
