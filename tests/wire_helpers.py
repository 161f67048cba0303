"""Test-only views of the wire, kept out of the package: a reference decoder for relayed
broadcasts, written apart from the code under test so that it can check it."""

from __future__ import annotations

from dataclasses import dataclass

from stereo.wire.framing import Frame
from stereo.wire.protocol import BROADCAST_OVERHEAD, STAMP


@dataclass(frozen=True, slots=True)
class Delivery:
    """One broadcast as a worker receives it, payload still encoded."""

    seq: int
    sender: int
    payload: bytes


def split_broadcast(frame: Frame) -> Delivery:
    body = frame.body
    assert len(body) >= BROADCAST_OVERHEAD, f"BROADCAST frame of {len(body) + 1} bytes is too short"
    seq, sender = STAMP.unpack_from(body, 0)
    return Delivery(seq, sender, body[BROADCAST_OVERHEAD:])
