"""The hub protocol between the master and its workers: frame kinds and their bodies.

Pure, like :mod:`.framing`. docs/protocol.md is the normative description; keep the two in
step. The master never decodes a broadcast payload: it stamps the sequence number and sender into
the fixed-size header in place and forwards the bytes (:class:`HubIngress`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any, Final, NamedTuple

import cbor2

from ..errors import EncodeError, MessageTooLarge, ProtocolError
from .framing import (
    PREFIX,
    PREFIX_SIZE,
    Direct,
    Frame,
    direct_frames,
    length_error,
    missing_bytes,
    prefix_error,
)
from .nesting import MAX_DEPTH, nesting_exceeds_py

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_SIZE: Final = 1024 * 1024
# Bytes of received broadcasts one message iterator of a worker may hold (WELCOME's inbox_limit).
DEFAULT_INBOX_LIMIT: Final = 8 * 1024 * 1024


class Kind(IntEnum):
    HELLO = 0x01  # worker -> master, CBOR map
    WELCOME = 0x02  # master -> worker, CBOR map
    READY = 0x03  # worker -> master, empty
    HEARTBEAT = 0x04  # worker -> master, empty
    BROADCAST = 0x05  # both ways: seq u64, sender u32, CBOR payload
    BOOT_ERROR = 0x06  # worker -> master, CBOR map {"reason": str}, then the worker exits
    # Between a master and its broker bridge (docs/scale-out.md; stereo/wire/bridge.py):
    BATCH = 0x07  # master -> bridge: u32 count, u64 batch number, BROADCAST frames
    APPENDED = 0x08  # bridge -> master: u64 batch number (every batch up to it is appended)
    DELIVER = 0x09  # bridge -> master: u32 count, u64 first global seq, BROADCAST frames
    RESET = 0x0A  # bridge -> master: CBOR map {"reason": str}: cut every worker off
    # The job pool (docs/pool.md; stereo/wire/jobs.py), outside the broadcast order:
    DIRECT = 0x0B  # worker -> one hub address (relayed unread): u32 peer, payload
    MEMBERS = 0x0C  # master -> worker: CBOR map {"pools": {name: [[address, pid]]}, "dead": [...]}
    POOL_STATE = 0x0D  # pool process -> master: CBOR map {"done", "queued", "leaving", "drained"}
    END = 0x0E  # master -> pool process: nothing more will be relayed to you; empty
    BOUNCED = 0x0F  # master -> worker: a DIRECT frame given back, its address unreachable
    REQUEST = 0x10  # control client -> master, CBOR map
    REPLY = 0x11  # master -> control client, CBOR map
    BRIDGE_STATUS = 0x12  # bridge -> master: CBOR map {"error": str | None}: broker away, why


# length u32, kind u8, seq u64, sender u32: one pack/unpack per broadcast on the hot path.
BROADCAST_HEADER: Final = struct.Struct(">IBQI")
BROADCAST_HEADER_SIZE: Final = BROADCAST_HEADER.size  # 17
STAMP: Final = struct.Struct(">QI")
STAMP_OFFSET: Final = PREFIX_SIZE
# Bytes a broadcast body carries besides its payload.
BROADCAST_OVERHEAD: Final = STAMP.size  # 12
#: The largest payload a BROADCAST frame can carry at all: its u32 length counts the kind byte
#: and the stamp too. --max-message-size may not go above it.
LARGEST_MESSAGE_SIZE: Final = 0xFFFFFFFF - 1 - BROADCAST_OVERHEAD


def max_body_size(max_message_size: int) -> int:
    """The largest frame body a connection accepts when payloads are capped at max_message_size."""
    return max_message_size + BROADCAST_OVERHEAD


def encode_cbor(value: Any) -> bytes:
    try:
        return cbor2.dumps(value)
    except Exception as exc:  # cbor2 raises several types (CBOREncodeError, ValueError, ...)
        raise EncodeError(f"cannot encode {type(value).__name__} as CBOR: {exc}") from exc


def decode_map(frame: Frame) -> dict[str, Any]:
    """Decode a control frame's CBOR map body, or raise ProtocolError."""
    try:
        value = cbor2.loads(frame.body)
    except Exception as exc:
        raise ProtocolError(f"{_kind_name(frame.kind)} body is not valid CBOR: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ProtocolError(f"{_kind_name(frame.kind)} body must be a CBOR map with text keys")
    return value


def encode_map(kind: Kind, value: dict[str, Any]) -> bytes:
    body = encode_cbor(value)
    return PREFIX.pack(len(body) + 1, kind) + body


def encode_broadcast(payload: bytes, max_message_size: int, seq: int = 0, sender: int = 0) -> bytes:
    """A BROADCAST frame for an already CBOR-encoded payload."""
    if len(payload) > max_message_size:
        raise MessageTooLarge(
            f"message encodes to {len(payload)} bytes; the limit is {max_message_size}"
            " (--max-message-size)"
        )
    return (
        BROADCAST_HEADER.pack(len(payload) + 1 + BROADCAST_OVERHEAD, Kind.BROADCAST, seq, sender)
        + payload
    )


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name
    except ValueError:
        return f"kind 0x{kind:02x}"


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive broadcast frames, already stamped, to forward to every worker as they are."""

    data: bytes
    count: int
    first_seq: int


WORKER_TO_MASTER: Final = frozenset(
    {Kind.HELLO, Kind.READY, Kind.HEARTBEAT, Kind.BOOT_ERROR, Kind.POOL_STATE}
)
#: The frames a worker's broadcast reader hands to its side handler (the pool client).
SIDE_KINDS: Final = frozenset({Kind.DIRECT, Kind.MEMBERS, Kind.BOUNCED})
_DIRECT_MIN_LENGTH: Final = 5  # a DIRECT frame's length holds its kind byte and u32 peer
_DIRECT: Final = Kind.DIRECT.value
_PEER: Final = struct.Struct(">I")


class HubIngress:
    """The master's side of one worker's hub connection: :meth:`events` splits the bytes into
    runs of broadcasts, stamped with seq and sender in place (one header unpack and one pack: the
    payload is never copied twice or decoded), and control frames."""

    __slots__ = ("_buffer", "_max_length", "address", "sender")

    def __init__(self, sender: int, max_message_size: int) -> None:
        self.sender = sender
        #: The connection's hub address, stamped into the DIRECT frames it sends (the job pool).
        self.address = 0
        self._max_length = max_body_size(max_message_size) + 1  # the prefix counts the kind
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        # No checks here: events() reports a bad prefix as its last item, after the good frames.
        self._buffer += data

    def take_buffer(self) -> bytes:
        """Hand what is buffered over (to the C relay, stereo/master/cplane.py), emptied."""
        data, self._buffer[:] = bytes(self._buffer), b""
        return data

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buffer)

    @property
    def missing(self) -> int:
        """Bytes still to come for the incomplete frame buffered (0 if none or unknown)."""
        return missing_bytes(self._buffer, self._max_length)

    def events(self, next_seq: int) -> tuple[list[Run | Frame | Direct | ProtocolError], int]:
        """Complete frames so far as runs and control frames, plus the next free sequence number.

        A bad length prefix, a broadcast shorter than its header or a kind a worker may not send
        ends the list with a ProtocolError (the connection must be cut); the valid frames before it
        are still returned, so a worker's last good broadcasts are relayed.
        """
        buffer = self._buffer
        out: list[Run | Frame | Direct | ProtocolError] = []
        error: ProtocolError | None = None
        offset = 0
        run_start = 0
        run_count = 0
        direct_start = direct_stop = 0
        direct_target = -1  # DIRECT frames pending for one address (-1: none)
        end = len(buffer)
        sender = self.sender
        max_length = self._max_length
        unpack = PREFIX.unpack_from
        stamp = STAMP.pack_into
        broadcast = Kind.BROADCAST.value
        # framing.scan_frames's walk, written out: a generator step per frame would cost the
        # relay a fifth of its time. The same bounds (length 0 is caught by the per-kind test,
        # which costs the broadcast path nothing) and the same errors, after the good frames.
        while end - offset >= PREFIX_SIZE:
            length, kind = unpack(buffer, offset)
            if length > max_length:
                error = refused_from_worker(kind, length, max_length)
                break
            stop = offset + 4 + length  # LENGTH_SIZE: a literal, not a global lookup per frame
            if stop > end:
                break
            if kind == broadcast:
                if length < 1 + BROADCAST_OVERHEAD:
                    error = refused_from_worker(kind, length, max_length)
                    break
                if run_count == 0:
                    run_start = offset
                stamp(buffer, offset + STAMP_OFFSET, next_seq, sender)
                next_seq += 1
                run_count += 1
            elif kind == _DIRECT:  # the job pool: stamp the sender where the target was
                if length < _DIRECT_MIN_LENGTH:
                    error = ProtocolError(f"DIRECT frame of {length} bytes is too short")
                    break
                if run_count:  # a run is one slice of the buffer: it ends here
                    out.append(_run(buffer, run_start, offset, run_count, next_seq))
                    run_count = 0
                target = _PEER.unpack_from(buffer, offset + PREFIX_SIZE)[0]
                _PEER.pack_into(buffer, offset + PREFIX_SIZE, self.address)
                # Consecutive frames for one address leave as one slice.
                if target != direct_target or direct_stop != offset:
                    if direct_target >= 0:
                        out.append(direct_frames(buffer, direct_start, direct_stop, direct_target))
                    direct_start, direct_target = offset, target
                direct_stop = stop
            else:
                if length == 0 or kind not in WORKER_TO_MASTER:
                    error = refused_from_worker(kind, length, max_length)
                    break
                if run_count:
                    out.append(_run(buffer, run_start, offset, run_count, next_seq))
                    run_count = 0
                if direct_target >= 0:  # relayed before the control frame is answered
                    out.append(direct_frames(buffer, direct_start, direct_stop, direct_target))
                direct_target = -1
                out.append(Frame(kind, bytes(buffer[offset + PREFIX_SIZE : stop])))
            offset = stop
        else:  # under five bytes left, perhaps a whole length prefix: checked as soon as it is
            error = prefix_error(buffer, offset, max_length)
        if run_count:
            out.append(_run(buffer, run_start, offset, run_count, next_seq))
        if direct_target >= 0:
            out.append(direct_frames(buffer, direct_start, direct_stop, direct_target))
        if error is not None:
            out.append(error)
        if offset:
            del buffer[:offset]
        return out, next_seq


def refused_from_worker(kind: int, length: int, max_length: int) -> ProtocolError:
    """Why HubIngress refuses a frame; the length comes first, as in every reader."""
    if not 0 < length <= max_length:
        return length_error(length, max_length)
    if kind == Kind.BROADCAST:
        return ProtocolError(f"BROADCAST frame of {length} bytes is too short")
    return ProtocolError(f"a worker may not send {_kind_name(kind)}")


def _run(buffer: bytearray, start: int, stop: int, count: int, next_seq: int) -> Run:
    # One copy (a bytearray slice would copy twice); the view is released at once.
    with memoryview(buffer) as view:
        data = bytes(view[start:stop])
    return Run(data, count, next_seq - count)


class UndecodablePayload:
    """Stands in for a broadcast value that is not valid CBOR (only a misbehaving peer can send
    one, since the master relays payloads unread). Delivered in place, so there is no gap."""

    __slots__ = ("error", "raw")

    def __init__(self, raw: bytes, error: str) -> None:
        self.raw = raw
        self.error = error

    def __repr__(self) -> str:
        return f"UndecodablePayload({len(self.raw)} bytes: {self.error})"


class Message(NamedTuple):
    """One broadcast as received: the decoded value, who sent it (0 = master) and its hub seq.
    ``data`` is an :class:`stereo.UndecodablePayload` if the sender bypassed stereo and sent bytes
    that are not CBOR (the master relays payloads unread). A named tuple: immutable (every
    subscribed iterator gets the same object), and the cheapest record to build."""

    data: Any
    sender: int
    seq: int


_VIEW_ABOVE = 16 * 1024  # payload size from which decoding in place beats copying first


def _load_speedups() -> ModuleType | None:
    """The C versions of the hot loops, unless disabled or not built (see setup.py)."""
    if os.environ.get("STEREO_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


_speedups = _load_speedups()
_decode_fast: Callable[..., int] | None = (
    _speedups.decode_broadcasts if _speedups is not None else None
)


def _frame_broadcast_py(payload: bytes, kind: int = Kind.BROADCAST) -> bytes:
    return BROADCAST_HEADER.pack(len(payload) + 1 + BROADCAST_OVERHEAD, kind, 0, 0) + payload


#: A worker's BROADCAST frame for an encoded payload, seq and sender left 0 for the master.
frame_broadcast: Callable[[bytes, int], bytes] = (
    _speedups.frame_broadcast if _speedups is not None else _frame_broadcast_py
)


#: Whether an encoded item nests deeper than a limit (see :mod:`.nesting`).
nesting_exceeds: Callable[[bytes, int], bool] = (
    _speedups.nesting_exceeds if _speedups is not None else nesting_exceeds_py
)


def refuse_too_deep(payload: bytes) -> None:
    """Raise EncodeError for a value the receivers' decoder refuses as too deep (one of at most
    MAX_DEPTH bytes never is: the caller may skip the call)."""
    if nesting_exceeds(payload, MAX_DEPTH):
        raise EncodeError(
            f"cannot send a value nested more than {MAX_DEPTH} levels deep (arrays, maps and"
            " tags): the receivers' CBOR decoder refuses it"
        )


def accelerated() -> bool:
    """True when workers decode broadcasts in C (stereo.wire._speedups): stereo.accelerations()."""
    return _decode_fast is not None


class BroadcastReader:
    """The worker's side of the hub: the master's byte stream in, decoded broadcasts out.

    One pass over each received chunk, decoding payloads straight out of the buffer; the master
    sends nothing but BROADCAST frames once the handshake is over. The C accelerator, when built,
    takes every ordinary frame; the Python loop below handles whatever it stops at (and all
    frames without it), so both produce the same messages and errors. Only C decodes a run of
    tag-free payloads in one ``loads`` call: in Python the walk that admits one costs more.
    """

    __slots__ = ("_buffer", "_fast", "_max_length", "last_size", "on_frame")

    def __init__(self, max_message_size: int, *, accelerate: bool = True) -> None:
        self._max_length = max_body_size(max_message_size) + 1
        self._buffer = bytearray()
        self._fast = _decode_fast if accelerate else None
        #: Called with (kind, body) for each DIRECT, MEMBERS and BOUNCED frame (the job pool's
        #: client); None: those frames are refused like any other unexpected kind.
        self.on_frame: Callable[[int, bytes], None] | None = None
        #: Bytes of the frames the last :meth:`deliveries` decoded: what a batch weighs.
        self.last_size = 0

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def missing(self) -> int:
        """Bytes still to come for the incomplete frame buffered (0 if none or unknown), never
        more than the largest frame allowed: a bad prefix must not size a read."""
        return missing_bytes(self._buffer, self._max_length)

    def deliveries(self) -> list[Message]:
        """Every complete broadcast buffered so far, decoded."""
        buffer = self._buffer
        out: list[Message] = []
        append = out.append
        offset = 0
        end = len(buffer)
        unpack = BROADCAST_HEADER.unpack_from
        loads = cbor2.loads
        broadcast = Kind.BROADCAST.value
        max_length = self._max_length
        fast = self._fast
        new = tuple.__new__
        try:
            while end - offset >= BROADCAST_HEADER_SIZE:
                if fast is not None:
                    offset = fast(
                        buffer, offset, max_length, _VIEW_ABOVE, broadcast, loads, Message, out
                    )
                    if end - offset < BROADCAST_HEADER_SIZE:
                        break
                length, kind, seq, sender = unpack(buffer, offset)
                if kind != broadcast or length > max_length or length < 1 + BROADCAST_OVERHEAD:
                    # Off the broadcast path: the pool's frames, else a protocol error.
                    if (
                        self.on_frame is None
                        or kind not in SIDE_KINDS
                        or not 0 < length <= max_length
                    ):
                        raise _unexpected_frame(kind, length, max_length)
                    stop = offset + 4 + length
                    if stop > end:
                        break
                    self.on_frame(kind, bytes(buffer[offset + PREFIX_SIZE : stop]))
                    offset = stop
                    continue
                stop = offset + 4 + length
                if stop > end:
                    break
                start = offset + BROADCAST_HEADER_SIZE
                if stop - start < _VIEW_ABOVE:
                    # Slicing the bytearray copies, but costs less than a memoryview slice.
                    value = _decode(buffer[start:stop])
                else:
                    # A big payload: decode it in place rather than copy it first.
                    with memoryview(buffer) as view, view[start:stop] as payload:
                        value = _decode(payload)
                append(new(Message, (value, sender, seq)))
                offset = stop
            if end - offset < BROADCAST_HEADER_SIZE:
                # Too little for a header, maybe enough for a prefix: checked as soon as it is.
                error = prefix_error(buffer, offset, max_length)
                if error is not None:
                    raise error
        finally:
            self.last_size = offset
            if offset:
                del buffer[:offset]
        return out


def _unexpected_frame(kind: int, length: int, max_length: int) -> ProtocolError:
    """Why a frame from the master was refused (the C loop stops at the same frames)."""
    if not 0 < length <= max_length:
        return length_error(length, max_length)
    return ProtocolError(f"unexpected frame from the master: {_kind_name(kind)}, length {length}")


def _decode(payload: bytearray | memoryview) -> Any:
    try:
        return cbor2.loads(payload)
    except Exception as exc:
        return UndecodablePayload(bytes(payload), str(exc))
