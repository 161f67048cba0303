"""The job pool's frames (docs/pool.md, docs/protocol.md "Directed frames"): pure, no I/O.

A DIRECT frame carries one payload from one hub connection to another; the master reads only
its ``peer`` field (the destination on the way in, replaced in place by the sender's address on
the way out) and relays the rest unread. The payload of a pool job is ``op u8, job u64, body``,
the body pickled (an answer's op may carry :data:`NEXT_IS_YOURS`). Pickle is only ever read from
a DIRECT frame, which only the app's own processes can send through its master: never from the
control socket, the network or a broker.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

from ..errors import ProtocolError
from .framing import PREFIX_SIZE
from .protocol import Kind

#: The whole header of a job frame: length, kind, peer, op, job id.
JOB_HEADER: Final = struct.Struct(">IBIBQ")
JOB_HEADER_SIZE: Final = JOB_HEADER.size  # 18
# What a DIRECT body holds besides the job's pickled body: peer, op, job id.
JOB_OVERHEAD: Final = JOB_HEADER_SIZE - PREFIX_SIZE


class Op(IntEnum):
    JOB = 1  # caller -> pool process: pickle of (fn, args, kwargs)
    RESULT = 2  # pool process -> caller: pickle of the return value
    ERROR = 3  # pool process -> caller: pickle of (exception or None, repr, traceback text)
    CANCEL = 4  # caller -> pool process: skip this job if it has not started; empty body
    CANCELLED = 5  # pool process -> caller: the job was skipped; empty body
    STARTED = 6  # pool process -> caller: the job starts now (it may die in it); empty body


#: Or'ed into a RESULT or ERROR op: the pool process starts, as it sends this answer, the
#: receiver's next job (its oldest unanswered one there), so no STARTED frame is needed for it.
NEXT_IS_YOURS: Final = 0x80


class JobFrame(NamedTuple):
    """A job frame as received: ``peer`` is the sender's hub address."""

    peer: int
    op: int
    job: int
    body: bytes


def encode_job(peer: int, op: int, job: int, body: bytes = b"") -> bytes:
    """A DIRECT frame addressed to ``peer`` (the master stamps the sender in its place)."""
    return JOB_HEADER.pack(len(body) + 1 + JOB_OVERHEAD, Kind.DIRECT, peer, op, job) + body


def decode_job(body: bytes | bytearray | memoryview) -> JobFrame:
    """A received DIRECT (or BOUNCED) frame's body as a job frame; ProtocolError if too short
    or of an unknown op."""
    if len(body) < JOB_OVERHEAD:
        raise ProtocolError(f"a job frame of {len(body)} bytes is too short")
    peer, op, job = struct.unpack_from(">IBQ", body)
    if op not in _OPS and (op & ~NEXT_IS_YOURS) not in _ANSWERS:
        raise ProtocolError(f"unknown job op {op}")
    return JobFrame(peer, op, job, bytes(body[JOB_OVERHEAD:]))


_OPS: Final = frozenset(int(op) for op in Op)
_ANSWERS: Final = frozenset({int(Op.RESULT), int(Op.ERROR)})
