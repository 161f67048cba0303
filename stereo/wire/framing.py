"""Length-prefixed framing shared by the hub and the control socket.

Pure: bytes in, frames out; no I/O and no trio. Every frame on the wire is

    +----------------+----------+----------------------+
    | length: u32 BE | kind: u8 | body: length-1 bytes |
    +----------------+----------+----------------------+

``length`` counts the kind byte and the body, so the smallest legal frame is five bytes. The
length is checked against the limit as soon as its four bytes have arrived, before any of the body
is buffered, so a peer cannot make us allocate more than one frame's worth of memory.

Every reader of these frames follows the same rules, written once here: :func:`scan_frames` walks
a buffer; :func:`length_error` is the one place a bad length prefix is put into words, and
:func:`prefix_error` applies the four-bytes rule to whatever is left after the complete frames;
:func:`missing_bytes` sizes the next read. The relay's and the worker's per-frame loops
(:class:`.protocol.HubIngress`, :class:`.protocol.BroadcastReader`) walk inline, since a
generator step per frame would cost them a fifth of their time, but with the same bounds, and
they report these same errors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..errors import ProtocolError

PREFIX: Final = struct.Struct(">IB")
PREFIX_SIZE: Final = PREFIX.size  # 5
LENGTH_SIZE: Final = 4  # the u32 length, which counts what follows it (kind byte and body)


class FrameTooLarge(ProtocolError):
    """A length prefix announced a frame above the agreed limit."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Direct:
    """DIRECT frames for the hub address ``target`` (the job pool), their sender already
    stamped in place: relayed as they are."""

    data: bytes
    target: int


def direct_frames(buffer: bytearray, start: int, stop: int, target: int) -> Direct:
    with memoryview(buffer) as view:  # one copy, as for a run of broadcasts
        data = bytes(view[start:stop])
    return Direct(data, target)


def encode_frame(kind: int, body: bytes = b"") -> bytes:
    return PREFIX.pack(len(body) + 1, kind) + body


def length_error(length: int, max_length: int) -> ProtocolError:
    """The error for a length prefix outside ``1..max_length`` (a reader keeps the stream only
    while ``0 < length <= max_length``). ``max_length`` bounds the prefix, so it counts the kind
    byte; the message speaks of bodies, as the limits are given."""
    if length == 0:
        return ProtocolError("frame length 0: a frame holds at least its kind byte")
    return FrameTooLarge(f"frame of {length - 1} bytes announced; the limit is {max_length - 1}")


def prefix_error(buffer: bytearray, offset: int, max_length: int) -> ProtocolError | None:
    """The error for the length prefix at ``offset`` once its four bytes have arrived (the body
    need not have), else None. Readers call it on what is left after their complete frames."""
    if len(buffer) - offset < LENGTH_SIZE:
        return None
    length = int.from_bytes(buffer[offset : offset + LENGTH_SIZE], "big")
    return None if 0 < length <= max_length else length_error(length, max_length)


def scan_frames(buffer: bytearray, max_length: int) -> Iterator[tuple[int, int, int]]:
    """Walk the frames of ``buffer``: ``(kind, body_start, stop)`` for each complete one, in
    order. At the end, an incomplete frame is left for later; a bad length prefix raises
    :func:`length_error`'s error, after the frames before it have been yielded.

    Nothing is consumed: the caller deletes ``buffer[:stop]`` of the last frame it used (the
    commit of a length-prefixed reader), and must not resize the buffer while walking it.
    """
    offset = 0
    end = len(buffer)
    unpack = PREFIX.unpack_from
    while end - offset >= PREFIX_SIZE:
        length, kind = unpack(buffer, offset)
        if not 0 < length <= max_length:
            raise length_error(length, max_length)
        stop = offset + LENGTH_SIZE + length
        if stop > end:
            return
        yield kind, offset + PREFIX_SIZE, stop
        offset = stop
    error = prefix_error(buffer, offset, max_length)
    if error is not None:
        raise error


class FrameReader:
    """Splits a byte stream into frames.

    Feed it whatever ``receive_some`` returned with :meth:`receive_data`, then drain complete frames
    with :meth:`frames`. Incomplete trailing bytes stay buffered (the commit/rollback of a
    length-prefixed reader: nothing is consumed until a whole frame is there).
    """

    __slots__ = ("_buffer", "_max_length")

    def __init__(self, max_body_size: int) -> None:
        # +1: the limit is on the body; the length prefix also counts the kind byte.
        self._max_length = max_body_size + 1
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        self._buffer += data
        # Fail fast on a bad prefix even if the body is still to come.
        error = prefix_error(self._buffer, 0, self._max_length)
        if error is not None:
            raise error

    def append(self, data: bytes) -> None:
        """Buffer data without checking it (for callers that check in their own scan)."""
        self._buffer += data

    def frames(self) -> list[Frame]:
        """Every complete frame buffered so far, in order (possibly none). A bad length prefix
        raises (the stream cannot be framed any more), and the frames before it go with it."""
        buffer = self._buffer
        out: list[Frame] = []
        offset = 0
        try:
            for kind, start, stop in scan_frames(buffer, self._max_length):
                out.append(Frame(kind, bytes(buffer[start:stop])))
                offset = stop
        finally:
            del buffer[:offset]
        return out

    def next_frame(self) -> Frame | None:
        """The first complete frame, or None if it has not fully arrived yet."""
        buffer = self._buffer
        head = next(scan_frames(buffer, self._max_length), None)
        if head is None:
            return None
        kind, start, stop = head
        frame = Frame(kind, bytes(buffer[start:stop]))
        del buffer[:stop]
        return frame

    @property
    def missing(self) -> int:
        """Bytes still to come for the incomplete frame at the head of the buffer (0 if its
        prefix has not arrived), so a reader can ask for all of a big frame in one read. Never
        more than the largest frame allowed: a bad prefix must not size a read."""
        return missing_bytes(self._buffer, self._max_length)

    def take_buffer(self) -> bytearray:
        """Hand over the raw buffer (the worker passes what followed WELCOME on to its
        broadcast reader); the reader starts empty."""
        buffer, self._buffer = self._buffer, bytearray()
        return buffer


def missing_bytes(buffer: bytearray, max_length: int) -> int:
    """Bytes still to come for the frame at the head of ``buffer``; 0 without a whole prefix.
    Capped at the largest frame a length of ``max_length`` allows: a lying prefix must not size
    a read."""
    if len(buffer) < LENGTH_SIZE:
        return 0
    missing = LENGTH_SIZE + int.from_bytes(buffer[:LENGTH_SIZE], "big") - len(buffer)
    return min(max(0, missing), LENGTH_SIZE + max_length)
