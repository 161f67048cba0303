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

# BATCH and DELIVER share one shape: a run of frames under a count and one u64 (the batch number,
# or the first global seq).
RUN_HEADER: Final = struct.Struct(">IQ")
NUMBER: Final = struct.Struct(">Q")


def _run_frame(kind: Kind, count: int, value: int, frames: bytes) -> bytes:
    return encode_frame(kind, RUN_HEADER.pack(count, value) + frames)


def _run_body(kind: Kind, body: bytes) -> tuple[int, int, bytes]:
    """(count, value, frames) of a BATCH or DELIVER body."""
    if len(body) < RUN_HEADER.size:
        raise ProtocolError(f"{kind.name} body of {len(body)} bytes is too short")
    count, value = RUN_HEADER.unpack_from(body)
    return count, value, body[RUN_HEADER.size :]


def encode_batch(number: int, count: int, frames: bytes) -> bytes:
    return _run_frame(Kind.BATCH, count, number, frames)


def decode_batch(body: bytes) -> tuple[int, int, bytes]:
    """(batch number, count, frames) of a BATCH body."""
    count, number, frames = _run_body(Kind.BATCH, body)
    return number, count, frames


def encode_appended(number: int) -> bytes:
    return encode_frame(Kind.APPENDED, NUMBER.pack(number))


def decode_appended(body: bytes) -> int:
    if len(body) != NUMBER.size:
        raise ProtocolError(f"APPENDED body of {len(body)} bytes, not {NUMBER.size}")
    return int(NUMBER.unpack(body)[0])


def encode_deliver(count: int, first_seq: int, frames: bytes) -> bytes:
    return _run_frame(Kind.DELIVER, count, first_seq, frames)


def decode_deliver(body: bytes) -> tuple[int, int, bytes]:
    """(count, first global seq, frames) of a DELIVER body."""
    return _run_body(Kind.DELIVER, body)
