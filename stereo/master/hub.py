"""The relay: one connection per worker process, every broadcast to every connected worker.

Total order comes for free from trio's single thread: a batch of broadcasts is stamped with sequence
numbers and appended to every peer's outbox without a checkpoint in between, so every outbox holds
the same frames in the same order. Each peer's outbox is bounded; a peer that lets it overflow is
cut off (never skipped), which is the "gap-free or cut off" guarantee.

That is the Python data plane, the reference. With the C one (cplane.py, STEREO_RELAY=c) this
class still does the handshakes and answers the control frames, while a thread of the C relay
reads, stamps and fans out under one mutex: the same order, bounds and cut-off rules.
"""

from __future__ import annotations

import traceback
from bisect import bisect_left
from functools import partial

import trio

from ..errors import ProtocolError
from ..snapshot import MESSAGE_SIZE_BUCKETS, HubStatistics
from ..wire.bridge import decode_appended, decode_deliver
from ..wire.framing import Direct, Frame, FrameReader
from ..wire.protocol import (
    PROTOCOL_VERSION,
    Kind,
    Run,
    decode_map,
    encode_broadcast,
    encode_map,
)
from .cplane import CPlane
from .peer import Peer
from .pool_routes import PoolRoutes
from .upstream import Upstream
from .watchdog import run_within

RECEIVE_SIZE = 256 * 1024
# A bridge's DELIVER holds one batch of a hub: at most one read of a worker's connection plus a
# largest broadcast under way.
BRIDGE_FRAME_MARGIN = 2 * RECEIVE_SIZE + 64


class CutOff(Exception):
    """This peer broke the protocol or fell too far behind; the master drops its connection."""


class Hub:
    """Relays broadcasts among the connected peers; knows nothing about processes.

    ``relay="c"``: the C data plane relays (cplane.py; :meth:`run` must run); this class then
    does the handshakes and answers control frames. Never with an upstream."""

    def __init__(
        self,
        *,
        max_message_size: int,
        outbox_limit: int,
        upstream: Upstream | None = None,
        relay: str = "python",
    ) -> None:
        self.max_message_size = max_message_size
        self.outbox_limit = outbox_limit
        #: Bridged (--bridge): workers' broadcasts go to the broker, not straight to the peers.
        self.upstream = upstream
        self.peers: dict[Peer, None] = {}  # insertion-ordered set
        self.next_seq = 1
        self.broadcasts = 0
        self.deliveries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.cutoffs = 0
        self.routes: PoolRoutes[Peer] = PoolRoutes(self.peers, self._cut_off)
        self.cutoffs_by_worker: dict[int, int] = {}
        self.size_counts = [0] * (len(MESSAGE_SIZE_BUCKETS) + 1)
        self.relayed_bytes = 0
        self.plane: CPlane[Peer] | None = None
        if relay == "c" and upstream is None:
            self.plane = CPlane(self)

    async def run(self) -> None:
        """The C data plane's event task (until cancelled); nothing to do for the Python one."""
        if self.plane is not None:
            await self.plane.run()

    def statistics(self) -> HubStatistics:
        if self.plane is not None:
            (
                self.broadcasts,
                self.deliveries,
                self.bytes_in,
                self.bytes_out,
                self.relayed_bytes,
                self.next_seq,
                sizes,
            ) = self.plane.totals()
            self.size_counts = list(sizes)
        return HubStatistics(
            broadcasts=self.broadcasts,
            deliveries=self.deliveries,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            cutoffs=self.cutoffs,
            peers=len(self.peers),
            next_seq=self.next_seq,
            outbox_limit=self.outbox_limit,
            bridge=self.upstream.statistics() if self.upstream is not None else None,
            cutoffs_by_slot=tuple(sorted(self.cutoffs_by_worker.items())),
            size_buckets=tuple(self.size_counts),
            relayed_bytes=self.relayed_bytes,
            relay="python" if self.plane is None else "c",
        )

    # -- relaying (no checkpoints in here: this is what makes the order total) ---------------

    def _fan_out(self, data: bytes, count: int) -> None:
        self.broadcasts += count
        # The size histogram, per batch: its frames go to the bucket of their mean size.
        size = len(data)
        self.relayed_bytes += size
        self.size_counts[bisect_left(MESSAGE_SIZE_BUCKETS, -(-size // count))] += count
        overflowing: list[Peer] = []
        broken: list[Peer] = []
        for peer in self.peers:
            peer.messages_out += count
            outbox = peer.outbox
            if outbox.chunks or outbox.in_flight:  # not idle (tested inline: per peer per batch)
                if outbox.put(data):
                    overflowing.append(peer)
            else:
                try:
                    outbox.send_now(data)
                except OSError:
                    broken.append(peer)  # it is gone; its reader sees EOF and reports it
        for peer in broken:
            self._cut_off_quietly(peer)
        for peer in overflowing:
            self._cut_off(
                peer,
                f"slow consumer: {peer.pending_bytes} bytes waiting for it, over the"
                f" {self.outbox_limit}-byte outbox limit",
                slow=True,
            )
        # Counted after the cut-offs: a peer dropped here will never get this batch.
        self.deliveries += count * len(self.peers)
        self.bytes_out += len(data) * len(self.peers)

    def broadcast_from_master(self, payload: bytes) -> int:
        """Relay an already CBOR-encoded value with sender 0; returns its sequence number (0
        when bridged: the broker numbers it)."""
        if self.upstream is not None:
            self.upstream.add(encode_broadcast(payload, self.max_message_size), 1)
            return 0
        seq = self.next_seq
        # Encode first: a refused value (MessageTooLarge) must not use up a sequence number.
        frame = encode_broadcast(payload, self.max_message_size, seq=seq, sender=0)
        if self.plane is not None:
            return self.plane.broadcast(frame)  # it stamps its own next seq
        self.next_seq += 1
        self._fan_out(frame, 1)
        return seq

    def _cut_off(self, peer: Peer, reason: str, *, slow: bool = False) -> None:
        if peer.cut_off_reason is None:
            peer.cut_off_reason = reason
            peer.cut_off_slow = slow
            self.cutoffs += 1
            worker = peer.worker_id
            if worker:  # 0 is the bridge, not a slot
                self.cutoffs_by_worker[worker] = self.cutoffs_by_worker.get(worker, 0) + 1
        self.peers.pop(peer, None)
        peer.outbox.clear()
        self.close_peer(peer)

    def close_peer(self, peer: Peer) -> None:
        """Drop a peer's connection: it ends (serve_peer returns) without a reason of its own."""
        # Closing the socket wakes both of the peer's tasks with ClosedResourceError.
        peer.stream.socket.close()
        if self.plane is not None:
            self.plane.drop(peer)

    # -- one peer's connection ----------------------------------------------------------------

    async def serve_peer(self, peer: Peer, handshake_timeout: float) -> None:
        """Run one worker's connection until it ends; afterwards ``peer.cut_off_reason`` says
        whether the master dropped it (None: the worker closed it or exited)."""
        try:
            # A HELLO left unread by a master that was not running is not late (watchdog.py).
            if not await run_within(
                handshake_timeout, peer.unread_bytes, partial(self._handshake, peer)
            ):
                self._cut_off(peer, f"no HELLO within {handshake_timeout:g} s")
                return
        except BaseException as exc:
            self._connection_ended(peer, exc)
        else:
            await (self._relay_peer(peer) if self.plane is None else self.plane.serve(peer))
        finally:
            self.peers.pop(peer, None)
            peer.outbox.clear()
            self.close_peer(peer)
            self.routes.leave(peer)
            peer.ended.set()

    async def _relay_peer(self, peer: Peer) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, peer)
            try:
                await self._read_loop(peer)
            except BaseException as exc:
                self._connection_ended(peer, exc)
            nursery.cancel_scope.cancel()

    def _connection_ended(self, peer: Peer, exc: BaseException) -> None:
        """Classify how a peer's connection ended; re-raise only what is not about the peer."""
        if isinstance(exc, CutOff):
            self._cut_off(peer, str(exc))
        elif isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
            self._cut_off_quietly(peer)  # the worker went away; its process task says why
        elif isinstance(exc, Exception):
            # A bug of ours triggered by this peer must cost the peer, never the master.
            self._cut_off(peer, f"internal error: {type(exc).__name__}: {exc}")
            traceback.print_exception(exc)
        else:
            raise exc  # cancellation, KeyboardInterrupt: not ours to swallow

    # -- what the C plane reports (cplane.PlaneOwner) -------------------------------------------

    def answer(self, peer: Peer, frame: Frame) -> bool:
        try:
            self._control(peer, frame)
        except BaseException as exc:  # CutOff, or a bug of ours: it costs the peer
            self._connection_ended(peer, exc)
            return False
        return True

    def cut_off(self, peer: Peer, reason: str | None, *, slow: bool = False) -> None:
        if reason is None:
            self._cut_off_quietly(peer)
        else:
            self._cut_off(peer, reason, slow=slow)

    def _cut_off_quietly(self, peer: Peer) -> None:
        self.peers.pop(peer, None)
        self.close_peer(peer)

    async def _handshake(self, peer: Peer, *, member: bool = True) -> None:
        while True:
            data = await peer.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError
            peer.ingress.receive_data(data)
            events, _ = peer.ingress.events(0)
            if events:
                break
        first = events[0]
        if isinstance(first, ProtocolError):  # e.g. a HELLO over the limit: say so
            raise CutOff(f"protocol error: {first}")
        if not isinstance(first, Frame) or first.kind != Kind.HELLO or len(events) > 1:
            raise CutOff("protocol error: the first frame must be HELLO, alone")
        try:
            hello = decode_map(first)
        except ProtocolError as exc:
            raise CutOff(f"protocol error: {exc}") from None
        if hello.get("version") != PROTOCOL_VERSION:
            raise CutOff(f"protocol version {hello.get('version')!r} is not {PROTOCOL_VERSION}")
        pid = hello.get("pid")
        peer.pid = pid if isinstance(pid, int) else None
        await peer.stream.send_all(encode_map(Kind.WELCOME, peer.events.welcome()))
        # A relay member from its WELCOME on, with no checkpoint in between: every broadcast
        # stamped after this reaches it.
        peer.outbox.limit = self.outbox_limit
        if member and peer.pool is None:  # a pool process takes jobs, not broadcasts
            self.peers[peer] = None
        if member:
            self.routes.join(peer)
            if self.plane is not None:
                self.plane.add(peer)  # from now on its own thread reads and writes this peer
        peer.welcomed.set()

    async def _read_loop(self, peer: Peer) -> None:
        stream = peer.stream
        ingress = peer.ingress
        upstream = self.upstream
        while True:
            if upstream is not None and upstream.full:
                await upstream.wait_for_room()  # the broker is behind: workers wait (bounded)
            # A big frame under way: read the rest of it at once rather than 256 KiB at a time.
            data = await stream.receive_some(max(RECEIVE_SIZE, ingress.missing))
            if not data:
                # Not a cut-off: a worker killed in the middle of a write ends the same way.
                peer.truncated_bytes = ingress.buffered
                return
            peer.bytes_in += len(data)
            self.bytes_in += len(data)
            ingress.receive_data(data)
            events, self.next_seq = ingress.events(self.next_seq)
            directs: list[Direct] = []
            for index, event in enumerate(events):
                if isinstance(event, Run):
                    peer.messages_in += event.count
                    if upstream is None:
                        self._fan_out(event.data, event.count)
                    else:  # ordered by the broker, delivered when the bridge reads it back
                        upstream.add(event.data, event.count)
                    continue
                if isinstance(event, Direct):
                    directs.append(event)  # relayed together: one write per receiver
                    continue
                if directs:
                    self.routes.relay_all(peer, directs)
                    directs = []
                try:
                    if isinstance(event, Frame):
                        self._control(peer, event)
                    else:
                        raise CutOff(f"protocol error: {event}")
                except CutOff:
                    # Nothing after the bad frame is relayed; hand its sequence numbers back
                    # (no checkpoint since they were stamped) so seq stays consecutive.
                    later = [e for e in events[index + 1 :] if isinstance(e, Run)]
                    if later:
                        self.next_seq = later[0].first_seq
                    raise
            if directs:
                self.routes.relay_all(peer, directs)

    def _control(self, peer: Peer, frame: Frame) -> None:
        kind = frame.kind
        if kind == Kind.HEARTBEAT:
            peer.events.heartbeat()
        elif kind == Kind.READY:
            peer.events.ready()
            self.routes.ready(peer)
        elif kind == Kind.POOL_STATE:
            try:
                self.routes.state(peer, decode_map(frame))
            except ProtocolError as exc:
                raise CutOff(f"protocol error: {exc}") from None
        elif kind == Kind.BOOT_ERROR:
            try:
                reason = decode_map(frame).get("reason")
            except ProtocolError as exc:
                raise CutOff(f"protocol error: {exc}") from None
            peer.events.boot_error(str(reason))
        else:
            raise CutOff(f"protocol error: unexpected {Kind(kind).name} after the handshake")

    # -- the broker bridge (docs/scale-out.md) --------------------------------------------------

    async def serve_bridge(self, peer: Peer, handshake_timeout: float) -> None:
        """Run the bridge process's connection until it ends: batches out, entries in."""
        upstream = self.upstream
        assert upstream is not None
        try:
            handshake = partial(self._handshake, peer, member=False)
            if not await run_within(handshake_timeout, peer.unread_bytes, handshake):
                self._cut_off(peer, f"no HELLO within {handshake_timeout:g} s")
                return
            # Its outbox holds the batches the upstream keeps, which bounds them itself.
            peer.outbox.limit = 2 * upstream.limit + BRIDGE_FRAME_MARGIN
            upstream.attach(peer.outbox)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, peer)
                try:
                    await self._bridge_read_loop(peer, upstream)
                except BaseException as exc:
                    self._connection_ended(peer, exc)
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            self._connection_ended(peer, exc)
        finally:
            upstream.detach(peer.outbox)
            peer.stream.socket.close()
            peer.ended.set()

    async def _bridge_read_loop(self, peer: Peer, upstream: Upstream) -> None:
        reader = FrameReader(self.max_message_size + BRIDGE_FRAME_MARGIN)
        while True:
            data = await peer.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            reader.append(data)
            for frame in reader.frames():
                kind = frame.kind
                if kind == Kind.DELIVER:
                    count, first, frames = decode_deliver(frame.body)
                    upstream.entries_in += 1
                    upstream.next_seq = first + count
                    self.next_seq = upstream.next_seq  # what `stats` shows
                    self._fan_out(frames, count)
                elif kind == Kind.APPENDED:
                    upstream.appended(decode_appended(frame.body))
                elif kind == Kind.BRIDGE_STATUS:
                    error = decode_map(frame).get("error")
                    upstream.broker_error = None if error is None else str(error)
                elif kind == Kind.RESET:
                    reason = str(decode_map(frame).get("reason"))
                    upstream.reset(reason)
                    for worker in list(self.peers):
                        self._cut_off(
                            worker, f"the broker bridge reset this hub: {reason}", slow=True
                        )
                elif kind not in (Kind.HEARTBEAT, Kind.READY):
                    raise CutOff(f"protocol error: a bridge may not send {Kind(kind).name}")

    async def _write_loop(self, peer: Peer) -> None:
        try:
            await peer.outbox.write_loop(peer.stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._cut_off_quietly(peer)  # ends the read loop too
