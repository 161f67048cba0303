"""The hub's C data plane (stereo/master/_relay.c), driven from trio.

After the handshake (Python, :meth:`stereo.master.hub.Hub._handshake`) the hub hands a peer's
socket to the C relay, whose own thread then reads it, stamps and fans out its broadcasts and
routes its DIRECT frames, without the GIL and without a Python wake-up per message. The rest comes
back here as events through one eventfd, which :meth:`CPlane.run` waits on:

- a control frame (HEARTBEAT, READY, POOL_STATE, BOOT_ERROR, a HELLO too many): answered as the
  Python hub answers it (:meth:`~stereo.master.hub.Hub._control`). The relay stops reading that
  one peer until the answer (resume, or cut off), so the frames after a control frame are handled
  exactly as the Python hub handles them; other peers go on meanwhile;
- a protocol error: worded here with HubIngress's own functions, so the reasons are the same;
- the end of a connection, and a slow consumer the relay cut off.

Guarantees are the Python hub's: one total order (the relay stamps under one mutex), gap-free or
cut off (the same per-peer byte bound and rule as :class:`~stereo.outbox.Outbox`), the runs before
a bad frame relayed and nothing after it. The Python hub stays the reference and the fallback:
without the extension, with ``--bridge``, with ``STEREO_RELAY=python`` or ``STEREO_PURE_PYTHON``.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Generic, Protocol, TypeVar

import trio

from ..accelerations import load_relay
from ..errors import ProtocolError
from ..outbox import Outbox
from ..snapshot import MESSAGE_SIZE_BUCKETS
from ..wire.framing import Frame
from ..wire.protocol import HubIngress, max_body_size, refused_from_worker

# Event types and slow-consumer causes, as _relay.c numbers them.
_CONTROL, _ERROR, _ENDED, _SLOW = 1, 2, 3, 4
_SLOW_FAN_OUT, _SLOW_DIRECT = 0, 1


_relay = load_relay()


def available() -> bool:
    """Whether the C relay is built (and not disabled by STEREO_PURE_PYTHON)."""
    return _relay is not None


def relay_plane(*, bridged: bool) -> str:
    """The data plane a master uses: "c" when the extension is built, the hub is not bridged (a
    bridged hub's broadcasts go to the broker, a path only the Python hub has) and
    ``STEREO_RELAY`` is not ``python``; else "python"."""
    wanted = os.environ.get("STEREO_RELAY", "c")
    return "c" if wanted != "python" and available() and not bridged else "python"


class RelayedPeer(Protocol):
    """What the C plane reads and keeps of a hub connection (:class:`stereo.master.peer.Peer`)."""

    worker_id: int
    relay_id: int
    address: int
    pool: str | None
    pool_leaving: bool
    truncated_bytes: int
    messages_in: int
    messages_out: int
    bytes_in: int
    outbox: Outbox
    stream: trio.SocketStream
    ingress: HubIngress


P = TypeVar("P", bound=RelayedPeer)
P_contra = TypeVar("P_contra", bound=RelayedPeer, contravariant=True)


class PlaneOwner(Protocol[P_contra]):
    """The hub, as the C plane reports to it (:class:`stereo.master.hub.Hub`)."""

    max_message_size: int
    outbox_limit: int

    def answer(self, peer: P_contra, frame: Frame) -> bool:
        """Handle a control frame as the Python hub does; False: the peer was cut off."""

    def cut_off(self, peer: P_contra, reason: str | None, *, slow: bool = False) -> None:
        """Drop the peer, for ``reason`` (None: it went away, no reason of its own)."""


class RelayOutbox(Outbox):
    """A relayed peer's outbox: what PoolRoutes and the hub put goes to the C relay's queue for
    it (same bound); the counters are the relay's, refreshed when read."""

    def __init__(self, relay: Any, peer: RelayedPeer) -> None:
        super().__init__(None, peer.outbox.limit)
        self._relay = relay
        self._peer = peer
        self._id = peer.relay_id
        self._accepting = True
        self._pending = self._peak_seen = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending

    @property
    def peak_bytes(self) -> int:
        return self._peak_seen

    def put(self, chunk: bytes) -> bool:
        if self._peer.pool_leaving and self._accepting:
            # Before END goes out: a DIRECT frame relayed from now on would come after it, so
            # from now on they bounce, as PoolRoutes bounces them for a leaving pool process.
            self._accepting = False
            self._relay.accepting(self._id, False)
        return bool(self._relay.send(self._id, chunk))

    def awaiting_answer(self) -> bool:
        """Has the relay read a control frame of this peer (a heartbeat, say) that the trio
        side has not handled yet? Evidence the watchdog has not seen, as unread bytes are."""
        return bool(self._peer.relay_id) and bool(self._relay.parked(self._id))

    def refresh(self) -> None:
        """Copy the relay's counters of this peer into it (nothing once it is removed)."""
        if self._peer.relay_id:
            self.record(self._relay.peer_statistics(self._id))

    def record(self, counters: tuple[int, int, int, int, int, int] | None) -> None:
        if counters is not None:
            peer = self._peer
            peer.messages_in, peer.messages_out, peer.bytes_in = counters[:3]
            self.bytes_written, self._pending, self._peak_seen = counters[3:]


class CPlane(Generic[P]):
    """One hub's C relay and the trio side of it."""

    def __init__(self, hub: PlaneOwner[P]) -> None:
        assert _relay is not None
        self._hub = hub
        self._max_length = max_body_size(hub.max_message_size) + 1
        self.relay = _relay.Relay(self._max_length, MESSAGE_SIZE_BUCKETS)
        self._peers: dict[int, tuple[P, trio.Event]] = {}
        self._next_id = 1

    async def run(self) -> None:
        """Handle the relay's events until cancelled; then stop its thread."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self.relay.fileno())
                for event in self.relay.take_events():
                    try:
                        self._dispatch(event)
                    except Exception as exc:  # a bug of ours costs the peer, never the master
                        self._failed(event[1], exc)
        finally:
            self.relay.close()

    def add(self, peer: P) -> None:
        """Hand a welcomed peer's connection to the relay (no checkpoint since the WELCOME)."""
        peer.relay_id = self._next_id
        self._next_id += 1
        queued = peer.outbox.take()  # what the hub already put (a MEMBERS notice)
        outbox = RelayOutbox(self.relay, peer)
        peer.outbox = outbox
        self._peers[peer.relay_id] = (peer, trio.Event())
        self.relay.add(
            peer.relay_id,
            peer.stream.socket.fileno(),
            peer.worker_id,
            peer.address,
            peer.pool is None,  # a pool process takes jobs, not broadcasts
            self._hub.outbox_limit,
            peer.ingress.take_buffer(),  # read with the HELLO: the start of the next frame
        )
        for chunk in queued:
            outbox.put(chunk)

    async def serve(self, peer: P) -> None:
        """Wait until the relay is done with this peer (its end, or a cut-off)."""
        entry = self._peers.get(peer.relay_id)
        if entry is not None:
            await entry[1].wait()

    def drop(self, peer: P) -> None:
        """Close the peer's connection in the relay and forget it, keeping its counters."""
        entry = self._peers.pop(peer.relay_id, None)
        if entry is None:
            return
        final = self.relay.remove(peer.relay_id)
        peer.relay_id = 0
        if isinstance(peer.outbox, RelayOutbox):
            peer.outbox.record(final)
        entry[1].set()

    def broadcast(self, frame: bytes) -> int:
        return int(self.relay.broadcast(frame))

    def totals(self) -> tuple[int, int, int, int, int, int, tuple[int, ...]]:
        """The relay's counters: broadcasts, deliveries, bytes in and out, relayed bytes, the
        next seq and the size histogram (cut-offs are the hub's to count)."""
        return self.relay.statistics()  # type: ignore[no-any-return]

    def _failed(self, relay_id: int, exc: Exception) -> None:
        traceback.print_exception(exc)
        entry = self._peers.get(relay_id)
        if entry is not None:
            self._hub.cut_off(entry[0], f"internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind, relay_id = event[0], event[1]
        entry = self._peers.get(relay_id)
        if entry is None:
            return  # dropped already
        peer, hub = entry[0], self._hub
        if kind == _CONTROL:
            if hub.answer(peer, Frame(event[2], event[3])):
                self.relay.resume(relay_id)
        elif kind == _ERROR:
            error = refusal(event[2], event[3], event[4], self._max_length)
            hub.cut_off(peer, f"protocol error: {error}")
        elif kind == _ENDED:
            peer.truncated_bytes = event[2]
            hub.cut_off(peer, None)
        elif kind == _SLOW:
            pending, limit, cause = event[2:5]
            if cause in (_SLOW_FAN_OUT, _SLOW_DIRECT):
                reason = (
                    f"slow consumer: {pending} bytes waiting for it, over the"
                    f" {limit}-byte outbox limit"
                )
            else:
                reason = "slow consumer: its bounced frames overflow its outbox"
            hub.cut_off(peer, reason, slow=cause == _SLOW_FAN_OUT)


def refusal(kind: int, length: int, direct_short: int, max_length: int) -> ProtocolError:
    """Why the relay stopped at a frame, in HubIngress's words."""
    if direct_short:
        return ProtocolError(f"DIRECT frame of {length} bytes is too short")
    return refused_from_worker(kind, length, max_length)
