"""The handshake of a process that is not a trio worker (the broker bridge, a pool process):
HELLO, then WELCOME, on a blocking socket, before any event loop runs."""

from __future__ import annotations

import os
import socket
from typing import Any

from .errors import ProtocolError
from .wire.framing import FrameReader
from .wire.protocol import PROTOCOL_VERSION, Kind, decode_map, encode_map

RECEIVE_SIZE = 256 * 1024


def blocking_handshake(
    sock: socket.socket, max_body: int, **hello: Any
) -> tuple[dict[str, Any], FrameReader]:
    """Send HELLO (with ``hello``'s keys), read WELCOME; the reader keeps what followed it.
    EOFError if the master closed the connection, ProtocolError if it answered otherwise."""
    sock.sendall(encode_map(Kind.HELLO, {"version": PROTOCOL_VERSION, "pid": os.getpid(), **hello}))
    reader = FrameReader(max_body)
    while (frame := reader.next_frame()) is None:
        data = sock.recv(RECEIVE_SIZE)
        if not data:
            raise EOFError("the master closed the hub connection")
        reader.append(data)
    if frame.kind != Kind.WELCOME:
        raise ProtocolError("expected a WELCOME frame first")
    return decode_map(frame), reader
