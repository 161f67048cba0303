"""The control protocol: REQUEST and REPLY bodies on the control socket, and its size limits.

Pure, like the rest of :mod:`stereo.wire`; the master's server (:mod:`stereo.control.server`) and
the blocking client (:mod:`stereo.control.client`) drive it. docs/protocol.md, "Control socket",
is the normative description::

    client                                   master
      | REQUEST 0x10 {"id", "command", "args"} |
      |--------------------------------------->|  execute(command, args)
      |    REPLY 0x11 {"id", "ok": true,       |
      |               "result"} or             |
      |               {"id", "ok": false,      |
      |               "error"}                 |
      |<---------------------------------------|

Also here: the one argument with a syntax of its own, a signal (``"TERM"``, ``"sigkill"``, 15),
which the console checks before sending and the master checks again on receipt.
"""

from __future__ import annotations

import signal
from typing import Any, Final

from ..errors import ControlError, ProtocolError
from .framing import Frame
from .protocol import Kind, decode_map, encode_map

#: The smallest request limit; a broadcast value must fit, hence :func:`request_limit`.
MIN_REQUEST_SIZE: Final = 64 * 1024
#: The largest reply body a client accepts.
MAX_REPLY_SIZE: Final = 64 * 1024 * 1024


def request_limit(max_message_size: int) -> int:
    """The largest request body a master reads: room for a broadcast value of the largest
    allowed size, plus the rest of the request."""
    return max(MIN_REQUEST_SIZE, max_message_size + 4096)


def encode_request(request_id: int, command: str, args: dict[str, Any] | None = None) -> bytes:
    return encode_map(Kind.REQUEST, {"id": request_id, "command": command, "args": args or {}})


def encode_reply(request_id: Any, *, result: Any = None, error: str | None = None) -> bytes:
    if error is not None:
        return encode_map(Kind.REPLY, {"id": request_id, "ok": False, "error": error})
    return encode_map(Kind.REPLY, {"id": request_id, "ok": True, "result": result})


def decode_request(frame: Frame) -> tuple[Any, Any, Any]:
    """A REQUEST frame -> (id, command, args); ProtocolError for anything else."""
    if frame.kind != Kind.REQUEST:
        raise ProtocolError(
            f"expected a REQUEST frame (kind 0x{Kind.REQUEST:02x}), got kind 0x{frame.kind:02x}"
        )
    request = decode_map(frame)
    if "command" not in request:
        raise ProtocolError("the request has no 'command'")
    return request.get("id"), request["command"], request.get("args")


def decode_reply(frame: Frame) -> dict[str, Any]:
    if frame.kind != Kind.REPLY:
        raise ProtocolError(f"expected a REPLY frame, got kind 0x{frame.kind:02x}")
    reply = decode_map(frame)
    if not isinstance(reply.get("ok"), bool):
        raise ProtocolError("the reply has no boolean 'ok'")
    return reply


def parse_signal(value: str | int) -> int:
    """'TERM', 'sigterm', 'SIGTERM', '15' or 15 -> 15; ControlError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        if text.isdecimal():  # not isdigit(): '²' is a digit that int() refuses
            # No signal number has 20 digits; int() of thousands of them would raise.
            number = int(text) if len(text) < 20 else -1
        else:
            name = text if text.startswith("SIG") else "SIG" + text
            try:
                return int(signal.Signals[name])
            except KeyError:
                raise ControlError(f"unknown signal {shown(value)}") from None
    else:
        raise ControlError(f"a signal is a name or a number, not {type(value).__name__}")
    try:
        return int(signal.Signals(number))
    except ValueError:
        raise ControlError(f"unknown signal {shown(value)}") from None


def shown(value: str | int) -> str:
    """A value quoted in an error, cut short: it may be megabytes long, or an integer too long
    for ``str()``."""
    if isinstance(value, int):
        return str(value) if abs(value) < 10**20 else "(a number of over 20 digits)"
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
