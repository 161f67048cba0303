"""The master <-> bridge frames (pure): each round-trips, and a short body is refused by name."""

from __future__ import annotations

import pytest

from stereo.errors import ProtocolError
from stereo.wire.bridge import (
    decode_appended,
    decode_batch,
    decode_deliver,
    encode_appended,
    encode_batch,
    encode_deliver,
)
from stereo.wire.framing import FrameReader
from stereo.wire.protocol import Kind


def body_of(frame: bytes, kind: Kind) -> bytes:
    reader = FrameReader(1 << 20)
    reader.append(frame)
    (found,) = reader.frames()
    assert found.kind == kind
    return found.body


def test_each_frame_round_trips() -> None:
    assert decode_batch(body_of(encode_batch(7, 3, b"abc"), Kind.BATCH)) == (7, 3, b"abc")
    assert decode_deliver(body_of(encode_deliver(3, 2**40, b"xyz"), Kind.DELIVER)) == (
        3,
        2**40,
        b"xyz",
    )
    assert decode_appended(body_of(encode_appended(2**63), Kind.APPENDED)) == 2**63


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        (decode_batch, "BATCH body of 5 bytes is too short"),
        (decode_deliver, "DELIVER body of 5 bytes is too short"),
        (decode_appended, "APPENDED body of 5 bytes, not 8"),
    ],
)
def test_a_short_body_is_refused(decode: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(b"short")  # type: ignore[operator]
