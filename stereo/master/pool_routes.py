"""The job pool's routes through the hub: directed frames and who may receive them (docs/pool.md).

Every hub connection gets an address at its WELCOME. A DIRECT frame names the address it is for;
the hub stamps the sender's address in its place (:class:`stereo.wire.protocol.HubIngress`) and
this module appends it, unread, to the receiver's outbox, under the outbox's limit, outside the
broadcast order. The master neither queues nor chooses: callers pick the pool process.

Workers learn the pool processes from MEMBERS notices: on joining, and whenever a pool process
becomes ready, starts leaving (a graceful stop: it is sent END, after which it is owed nothing)
or is gone (listed in ``dead``). A frame for an address that is gone or leaving comes back to
its sender as BOUNCED, so a caller knows that job never reached a pool process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from ..outbox import Outbox
from ..wire.framing import LENGTH_SIZE, PREFIX_SIZE, Direct, encode_frame
from ..wire.protocol import HubIngress, Kind, encode_map


class RoutedPeer(Protocol):
    """What the routes read and keep of a hub connection (:class:`stereo.master.peer.Peer`)."""

    outbox: Outbox
    ingress: HubIngress
    pid: int | None
    address: int
    pool: str | None
    pool_leaving: bool
    pool_drained: bool
    jobs_done: int
    jobs_queued: int

    @property
    def pending_bytes(self) -> int: ...


_END = encode_frame(Kind.END)


P = TypeVar("P", bound=RoutedPeer)


class PoolRoutes(Generic[P]):
    """Addresses of the hub's connections, the ready pool processes, and the relay between."""

    def __init__(self, callers: Iterable[P], cut_off: Callable[[P, str], None]) -> None:
        self._callers = callers  # the hub's broadcast members: the workers that may call
        self._cut_off = cut_off
        self.by_address: dict[int, P] = {}
        self.members: dict[P, None] = {}  # ready pool processes, not leaving
        self._next_address = 1
        # MEMBERS goes out only once a pool process has joined: without --pool, workers see
        # no frame but BROADCAST, as before the pool existed.
        self._active = False
        self.relayed = 0
        self.bounced = 0

    def join(self, peer: P) -> None:
        """A connection was welcomed: give it an address; a worker learns the pools."""
        peer.address = peer.ingress.address = self._next_address
        self._next_address += 1
        self.by_address[peer.address] = peer
        if peer.pool is None and self._active:
            peer.outbox.put(self._notice(()))

    def ready(self, peer: P) -> None:
        if peer.pool is not None and not peer.pool_leaving and peer not in self.members:
            self.members[peer] = None
            self._active = True
            self._notify(())

    def state(self, peer: P, state: dict[str, Any]) -> None:
        """A pool process's POOL_STATE: its counters, and whether it is leaving."""
        if peer.pool is None:
            return
        done, queued = state.get("done"), state.get("queued")
        if isinstance(done, int) and isinstance(queued, int):
            peer.jobs_done, peer.jobs_queued = done, queued
        if state.get("leaving") and not peer.pool_leaving:
            # Everything relayed to it so far is ahead of END; later frames bounce.
            peer.pool_leaving = True
            self.members.pop(peer, None)
            peer.outbox.put(_END)
            self._notify(())
        if state.get("drained"):
            peer.pool_drained = True

    def leave(self, peer: P) -> None:
        """Its connection ended: callers fail or resend what they had there."""
        if self.by_address.pop(peer.address, None) is None:
            return
        if peer.pool is not None:
            self.members.pop(peer, None)
            self._notify((peer,))

    # -- the relay (no checkpoints) -------------------------------------------------------------

    def relay_all(self, sender: P, directs: list[Direct]) -> None:
        """Relay what one read brought, each receiver's frames in one piece, in order."""
        if len(directs) == 1:
            self.relay(sender, directs[0])
            return
        by_target: dict[int, list[bytes]] = {}
        for direct in directs:
            by_target.setdefault(direct.target, []).append(direct.data)
        for target, chunks in by_target.items():
            receiver = self.by_address.get(target)
            if len(chunks) == 1 or receiver is None or receiver.pool_leaving:
                for chunk in chunks:  # a bounce goes back frame by frame
                    self.relay(sender, Direct(chunk, target))
            else:
                self.relay(sender, Direct(b"".join(chunks), target))

    def relay(self, sender: P, direct: Direct) -> None:
        target = self.by_address.get(direct.target)
        if target is None or target.pool_leaving:
            self._bounce(sender, direct)
            return
        self.relayed += 1
        outbox = target.outbox
        if outbox.chunks or outbox.in_flight:
            if outbox.put(direct.data):
                self._cut_off(
                    target,
                    f"slow consumer: {target.pending_bytes} bytes waiting for it, over the"
                    f" {outbox.limit}-byte outbox limit",
                )
        else:
            try:
                outbox.send_now(direct.data)
            except OSError:
                pass  # it is gone; its reader sees EOF and its leave() tells the callers

    def _bounce(self, sender: P, direct: Direct) -> None:
        frame = bytearray(direct.data)
        target = direct.target.to_bytes(4, "big")
        offset = 0
        while offset < len(frame):  # each frame of the slice: HubIngress joins a target's run
            self.bounced += 1
            frame[offset + PREFIX_SIZE - 1] = Kind.BOUNCED
            frame[offset + PREFIX_SIZE : offset + PREFIX_SIZE + 4] = target
            offset += LENGTH_SIZE + int.from_bytes(frame[offset : offset + LENGTH_SIZE], "big")
        if sender.outbox.put(bytes(frame)):
            self._cut_off(sender, "slow consumer: its bounced frames overflow its outbox")

    # -- notices -------------------------------------------------------------------------------

    def _notice(self, dead: Iterable[P]) -> bytes:
        pools: dict[str, list[list[int]]] = {}
        for member in self.members:
            assert member.pool is not None
            pools.setdefault(member.pool, []).append([member.address, member.pid or 0])
        drained = [p.address for p in dead if p.pool_drained]
        return encode_map(
            Kind.MEMBERS,
            {
                "pools": pools,
                "dead": [p.address for p in dead if not p.pool_drained],
                "drained": drained,
            },
        )

    def _notify(self, dead: Iterable[P]) -> None:
        frame = self._notice(list(dead))
        for caller in self._callers:
            caller.outbox.put(frame)
