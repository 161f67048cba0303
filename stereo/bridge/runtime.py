"""The broker bridge process: the master's BATCHes into the broker, the broker's entries back to
the master as DELIVERs, in the broker's order, with every gap turned into a RESET.

Started by the master (``python -m stereo.bridge``) with its end of a hub connection in
``STEREO_HUB_FD``; everything else arrives in WELCOME. Two loops share the broker: appending
(one entry per batch, acknowledged by APPENDED; retried with backoff while the broker is away)
and reading (from the seq after the last one this hub delivered, or the tail for a new hub).
The broker away longer than the bridge timeout, or a gap in its order, is a RESET: the master
cuts its workers off, and reading starts again at the tail. Its lines go to stderr, prefixed.

The handshake is done here, blocking, before any event loop: WELCOME's URL says which loop the
broker's client needs. ``redis://`` runs under trio (:mod:`.runtime_trio`, coredis);
``nats://`` under asyncio (:mod:`.runtime_asyncio`, nats-py, which is asyncio only), so that
process never imports trio. Both drive the same decisions (:mod:`.logic`).
"""

from __future__ import annotations

import os
import socket
from typing import Any, NoReturn

from .. import exitcodes
from ..errors import ProtocolError
from ..urls import redact
from ..wire.framing import FrameReader
from ..wire.protocol import PROTOCOL_VERSION, Kind, decode_map, encode_map
from .logic import HUB_MAX_BODY, RECEIVE_SIZE, say


def handshake(sock: socket.socket) -> tuple[dict[str, Any], FrameReader]:
    """HELLO, then WELCOME; the reader keeps the batches the master sends right behind it."""
    sock.sendall(
        encode_map(Kind.HELLO, {"version": PROTOCOL_VERSION, "pid": os.getpid(), "role": "bridge"})
    )
    reader = FrameReader(HUB_MAX_BODY)
    while (frame := reader.next_frame()) is None:
        data = sock.recv(RECEIVE_SIZE)
        if not data:
            raise EOFError("the master closed the hub connection")
        reader.append(data)
    if frame.kind != Kind.WELCOME:
        raise ProtocolError("expected a WELCOME frame first")
    welcome = decode_map(frame)
    if welcome.get("role") != "bridge":
        raise ProtocolError("the master did not welcome a bridge")
    return welcome, reader


def run(hub_fd: int) -> int:
    sock = socket.socket(fileno=hub_fd)
    os.set_inheritable(hub_fd, False)
    sock.setblocking(True)  # until a loop takes it over
    welcome, reader = handshake(sock)
    url = str(welcome["url"])
    # Imported here: a process loads one event loop and one broker client, never both.
    if url.startswith("nats://"):
        from . import runtime_asyncio

        return runtime_asyncio.run(sock, reader, welcome)
    if url.startswith("redis://"):
        from . import runtime_trio

        return runtime_trio.run(sock, reader, welcome)
    raise ProtocolError(f"the master asked for a broker this bridge cannot reach: {redact(url)!r}")


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (possibly nested) group, for a one-line report."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def main() -> NoReturn:
    fd_text = os.environ.pop("STEREO_HUB_FD", "")
    if not fd_text.isdigit():
        say("STEREO_HUB_FD is not set; the bridge is started by `stereo run --bridge`")
        raise SystemExit(exitcodes.WORKER_BOOT_ERROR)
    try:
        code = run(int(fd_text))
    # Both loops report the hub gone from inside a task group (trio's nursery, asyncio's
    # TaskGroup), so as an exception group; the drivers turn their own loop's "connection
    # broken" into EOFError.
    except* (EOFError, OSError) as group:
        say(f"hub connection lost: {first_leaf(group)}")
        code = exitcodes.HUB_LOST
    except* KeyboardInterrupt:
        code = exitcodes.STOPPED
    raise SystemExit(code)
