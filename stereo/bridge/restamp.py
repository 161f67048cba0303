"""Giving a broker entry's frames their global sequence numbers (pure: bytes in, bytes out).

A hub stamps its workers' BROADCAST frames with local numbers; once the broker has ordered a
batch, every frame of it gets the global number the entry says (``first_seq`` on), on every hub
alike, and that is the ``msg.seq`` workers see. The payloads are never decoded: an entry is
checked only for being what a hub appends (whole BROADCAST frames, as many as it claims), since
bytes from a broker cross a trust boundary.
"""

from __future__ import annotations

import struct

from ..errors import ProtocolError
from ..wire.framing import PREFIX, PREFIX_SIZE
from ..wire.protocol import BROADCAST_OVERHEAD, STAMP_OFFSET, Kind

_BROADCAST = Kind.BROADCAST.value
# The seq half of a BROADCAST's stamp (u64 seq, then u32 sender): STAMP's first field.
_SEQ = struct.Struct(">Q")


def restamp(frames: bytes, count: int, first_seq: int, max_length: int) -> bytes:
    """``frames`` (``count`` BROADCAST frames) with their seqs set to ``first_seq`` on, senders
    kept. ``max_length`` bounds each frame's length prefix, as the hub's own readers do.

    Raises ProtocolError for anything else: a truncated frame, another kind, a frame over the
    limit, or a count that does not match.
    """
    buffer = bytearray(frames)
    offset = 0
    seq = first_seq
    end = len(buffer)
    unpack = PREFIX.unpack_from
    stamp = _SEQ.pack_into  # the sender, after the seq, stays as it is
    shortest = 1 + BROADCAST_OVERHEAD
    # One pass, names local: this runs for every frame every hub reads.
    while offset < end:
        if end - offset < PREFIX_SIZE:
            raise ProtocolError(f"entry ends inside a frame header at byte {offset}")
        length, kind = unpack(buffer, offset)
        if kind != _BROADCAST:
            raise ProtocolError(f"entry holds a frame of kind {kind:#04x}, not BROADCAST")
        if not shortest <= length <= max_length:
            raise ProtocolError(f"entry holds a BROADCAST frame of length {length}")
        stop = offset + 4 + length  # the u32 length prefix, then what it counts
        if stop > end:
            raise ProtocolError(f"entry ends inside a frame at byte {offset}")
        stamp(buffer, offset + STAMP_OFFSET, seq)
        seq += 1
        offset = stop
    if seq - first_seq != count:
        raise ProtocolError(f"entry claims {count} frames and holds {seq - first_seq}")
    return bytes(buffer)
