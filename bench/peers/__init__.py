"""The systems the relay and latency workloads compare: stereo and what users would use instead.

A peer knows how to tell whether its runtime is here (:meth:`Peer.missing`) and how to start one
leg's processes in a :class:`~bench.procs.Group`, returning the pid of the process that
does the relaying, whose CPU the harness samples. Everything else (the spec, the barrier, the
result files) is common to all peers.
"""

from __future__ import annotations

from ..results import BASELINE, BATCHES
from .base import Peer
from .node import NodeCluster
from .redis_pubsub import RedisPubSub
from .stereo_peer import BATCHES_APP, Stereo
from .zmq_proxy import ZmqProxy

__all__ = ["BATCHES", "NodeCluster", "Peer", "RedisPubSub", "Stereo", "ZmqProxy", "all_peers"]


def all_peers(baseline: str | None = None) -> list[Peer]:
    """Stereo first: every ratio is taken against it; then stereo with the batch API (relay legs
    only). Then, given the path of another installation's ``stereo`` command, that installation
    as the peer ``stereo-baseline`` (the same app as ``stereo``)."""
    stereos: list[Peer] = [Stereo(), Stereo(BATCHES, app=BATCHES_APP, modes=("relay",))]
    if baseline is not None:
        stereos.append(Stereo(BASELINE, [baseline]))
    return [*stereos, ZmqProxy(), RedisPubSub(), NodeCluster()]
