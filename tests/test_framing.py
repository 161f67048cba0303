"""The frame codec on its own: bytes in, frames out, no processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stereo.errors import ProtocolError
from stereo.wire.framing import Frame, FrameReader, FrameTooLarge, encode_frame

LIMIT = 64


def test_frames_whole_in_order() -> None:
    reader = FrameReader(LIMIT)
    reader.receive_data(encode_frame(1, b"abc") + encode_frame(2) + encode_frame(3, b"x" * LIMIT))
    assert reader.frames() == [Frame(1, b"abc"), Frame(2, b""), Frame(3, b"x" * LIMIT)]
    assert reader.buffered == 0


def test_partial_frame_waits_and_commits_only_when_whole() -> None:
    data = encode_frame(7, b"hello")
    reader = FrameReader(LIMIT)
    reader.receive_data(data[:6])
    assert reader.frames() == []
    assert reader.buffered == 6  # nothing consumed yet
    reader.receive_data(data[6:] + data[:2])
    assert reader.frames() == [Frame(7, b"hello")]
    assert reader.buffered == 2  # the start of the next frame stays


def test_oversize_prefix_is_refused_before_the_body_arrives() -> None:
    reader = FrameReader(LIMIT)
    with pytest.raises(FrameTooLarge, match="limit is 64"):
        reader.receive_data((LIMIT + 2).to_bytes(4, "big"))  # only the prefix, no body


def test_zero_length_frame_is_a_protocol_error() -> None:
    reader = FrameReader(LIMIT)
    with pytest.raises(ProtocolError, match="length 0"):
        reader.receive_data(b"\x00\x00\x00\x00")


def test_trailing_garbage_after_good_frames() -> None:
    reader = FrameReader(LIMIT)
    reader.receive_data(encode_frame(1, b"ok"))
    assert reader.frames() == [Frame(1, b"ok")]
    with pytest.raises(FrameTooLarge):
        reader.receive_data(b"\xff\xff\xff\xff\x01")


frames_strategy = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=LIMIT)), max_size=20)


@given(frames_strategy, st.integers(1, 50))
def test_any_split_yields_the_same_frames(frames: list[tuple[int, bytes]], step: int) -> None:
    data = b"".join(encode_frame(kind, body) for kind, body in frames)
    whole = FrameReader(LIMIT)
    whole.receive_data(data)
    pieces = FrameReader(LIMIT)
    out: list[Frame] = []
    for i in range(0, len(data), step):
        pieces.receive_data(data[i : i + step])
        out.extend(pieces.frames())
    expected = [Frame(kind, body) for kind, body in frames]
    assert whole.frames() == expected
    assert out == expected


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_arbitrary_bytes_give_frames_or_protocol_error_and_stay_bounded(
    data: bytes, step: int
) -> None:
    reader = FrameReader(LIMIT)
    try:
        for i in range(0, len(data), step):
            reader.receive_data(data[i : i + step])
            for frame in reader.frames():
                assert len(frame.body) <= LIMIT
            # Never holds more than one frame plus the last chunk.
            assert reader.buffered <= LIMIT + 5 + step
    except ProtocolError:
        pass


def test_missing_says_how_much_of_the_head_frame_is_still_to_come() -> None:
    reader = FrameReader(1000)
    assert reader.missing == 0  # nothing buffered
    frame = encode_frame(5, b"x" * 500)
    reader.append(frame[:3])
    assert reader.missing == 0  # the length prefix is not complete yet
    reader.append(frame[3:100])
    assert reader.missing == len(frame) - 100
    reader.append(frame[100:])
    assert reader.missing == 0


def test_missing_never_exceeds_the_largest_allowed_frame() -> None:
    # A lying prefix must not make the reader ask the kernel for gigabytes.
    reader = FrameReader(1000)
    reader.append((2**32 - 1).to_bytes(4, "big") + b"\x05")
    assert reader.missing == 4 + 1001
