"""The frames between a master and its broker bridge (docs/scale-out.md). Pure.

A BATCH carries what the master read from one worker in one go (a run of BROADCAST frames,
stamped with local numbers) under the master's batch number; APPENDED acknowledges batches up to
a number; DELIVER carries one broker entry's frames, already stamped with their global seqs.
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import ProtocolError
from .framing import encode_frame
from .protocol import Kind

BATCH_HEADER: Final = struct.Struct(">IQ")  # count, batch number
DELIVER_HEADER: Final = struct.Struct(">IQ")  # count, first global seq
NUMBER: Final = struct.Struct(">Q")


def encode_batch(number: int, count: int, frames: bytes) -> bytes:
    return encode_frame(Kind.BATCH, BATCH_HEADER.pack(count, number) + frames)


def decode_batch(body: bytes) -> tuple[int, int, bytes]:
    """(batch number, count, frames) of a BATCH body."""
    if len(body) < BATCH_HEADER.size:
        raise ProtocolError(f"BATCH body of {len(body)} bytes is too short")
    count, number = BATCH_HEADER.unpack_from(body)
    return number, count, body[BATCH_HEADER.size :]


def encode_appended(number: int) -> bytes:
    return encode_frame(Kind.APPENDED, NUMBER.pack(number))


def decode_appended(body: bytes) -> int:
    if len(body) != NUMBER.size:
        raise ProtocolError(f"APPENDED body of {len(body)} bytes, not {NUMBER.size}")
    return int(NUMBER.unpack(body)[0])


def encode_deliver(count: int, first_seq: int, frames: bytes) -> bytes:
    return encode_frame(Kind.DELIVER, DELIVER_HEADER.pack(count, first_seq) + frames)


def decode_deliver(body: bytes) -> tuple[int, int, bytes]:
    """(count, first global seq, frames) of a DELIVER body."""
    if len(body) < DELIVER_HEADER.size:
        raise ProtocolError(f"DELIVER body of {len(body)} bytes is too short")
    count, first = DELIVER_HEADER.unpack_from(body)
    return count, first, body[DELIVER_HEADER.size :]
