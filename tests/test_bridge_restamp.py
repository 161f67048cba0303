"""Restamping a broker entry's frames with global seqs: payloads and senders kept, anything that
is not whole BROADCAST frames refused."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stereo.bridge.restamp import restamp
from stereo.errors import ProtocolError
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import BroadcastReader, Kind, encode_broadcast

LIMIT = 1 << 20
MAX_LENGTH = LIMIT + 13


def frames_of(values: list[object], senders: list[int]) -> bytes:
    return b"".join(
        encode_broadcast(cbor2.dumps(v), LIMIT, seq=999, sender=s)
        for v, s in zip(values, senders, strict=True)
    )


@given(
    values=st.lists(
        st.one_of(st.integers(), st.text(max_size=50), st.binary(max_size=300)),
        min_size=1,
        max_size=30,
    ),
    first=st.integers(1, 2**63),
    data=st.data(),
)
def test_frames_get_consecutive_global_seqs_and_keep_payload_and_sender(
    values: list[object], first: int, data: st.DataObject
) -> None:
    senders = data.draw(
        st.lists(st.integers(0, 2**32 - 1), min_size=len(values), max_size=len(values))
    )
    out = restamp(frames_of(values, senders), len(values), first, MAX_LENGTH)
    reader = BroadcastReader(LIMIT)
    reader.receive_data(out)
    messages = reader.deliveries()
    assert [m.seq for m in messages] == list(range(first, first + len(values)))
    assert [m.sender for m in messages] == senders
    assert [m.data for m in messages] == values


@pytest.mark.parametrize(
    ("frames", "count", "message"),
    [
        (frames_of([1, 2], [1, 1]), 3, "claims 3 frames and holds 2"),
        (frames_of([1, 2], [1, 1])[:-1], 2, "ends inside a frame"),
        (frames_of([1], [1]) + b"\0\0", 1, "ends inside a frame header"),
        (encode_frame(Kind.HEARTBEAT), 1, "kind 0x04, not BROADCAST"),
        (encode_frame(Kind.BROADCAST, b"short"), 1, "BROADCAST frame of length 6"),
        (b"\xff\xff\xff\xff\x05" + b"x" * 20, 1, "length 4294967295"),
    ],
)
def test_anything_but_whole_broadcast_frames_is_refused(
    frames: bytes, count: int, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        restamp(frames, count, 1, MAX_LENGTH)
