"""The ZeroMQ peer's relay: ``zmq.proxy`` between an XSUB (workers publish into it) and an XPUB
(workers subscribe to it), alone in its own process as a user would deploy it.

High-water marks are off on both sides: at the default 1,000 a PUB/XPUB socket *drops* messages
under load, which would make the peer lossy rather than slow; unlimited queues keep it comparable
with stereo, which never drops.

Usage: ``python -m bench.apps.zmq_proxy XSUB_ADDR XPUB_ADDR``.
"""

from __future__ import annotations

import sys

import zmq

from ._spec import emit


def main(xsub_addr: str, xpub_addr: str) -> None:
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    xsub.bind(xsub_addr)
    xpub.bind(xpub_addr)
    emit("ready", id=0)
    zmq.proxy(xsub, xpub)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
