"""The frame codec on its own: bytes in, frames out, no processes."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_helpers import READERS, read_broadcasts

from stereo.errors import ProtocolError
from stereo.wire.framing import (
    Frame,
    FrameReader,
    FrameTooLarge,
    encode_frame,
    length_error,
    prefix_error,
    scan_frames,
)
from stereo.wire.protocol import encode_broadcast, max_body_size

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


# -- the one scanner and its one set of errors ------------------------------------------------

ZERO = b"\x00\x00\x00\x00"
OVERSIZE = (LIMIT + 2).to_bytes(4, "big")  # the largest legal length is LIMIT + 1 (kind byte)
BAD_PREFIXES = [pytest.param(ZERO, id="zero"), pytest.param(OVERSIZE, id="oversize")]


def test_the_length_errors_are_worded_once() -> None:
    zero = length_error(0, LIMIT + 1)
    assert type(zero) is ProtocolError
    assert str(zero) == "frame length 0: a frame holds at least its kind byte"
    oversize = length_error(LIMIT + 2, LIMIT + 1)
    assert isinstance(oversize, FrameTooLarge)
    assert str(oversize) == f"frame of {LIMIT + 1} bytes announced; the limit is {LIMIT}"


def test_prefix_error_waits_for_four_bytes_and_only_for_them() -> None:
    assert prefix_error(bytearray(OVERSIZE[:3]), 0, LIMIT + 1) is None
    assert str(prefix_error(bytearray(OVERSIZE), 0, LIMIT + 1)) == str(
        length_error(LIMIT + 2, LIMIT + 1)
    )
    assert prefix_error(bytearray(b"xx" + ZERO), 2, LIMIT + 1) is not None  # from an offset
    assert prefix_error(bytearray((LIMIT + 1).to_bytes(4, "big")), 0, LIMIT + 1) is None


def test_scan_frames_walks_complete_frames_and_consumes_nothing() -> None:
    one, two = encode_frame(1, b"abc"), encode_frame(2)
    buffer = bytearray(one + two + encode_frame(3, b"later")[:7])
    walked = list(scan_frames(buffer, LIMIT + 1))
    assert walked == [(1, 5, len(one)), (2, len(one) + 5, len(one) + len(two))]
    assert bytes(buffer[5:8]) == b"abc"
    assert len(buffer) == len(one) + len(two) + 7  # the caller commits, not the scanner


@pytest.mark.parametrize("bad", BAD_PREFIXES)
@pytest.mark.parametrize("tail", [b"", b"\x05", b"\x05" + b"x" * 100], ids=["4", "5", "105"])
def test_scan_frames_reports_a_bad_prefix_after_the_good_frames(bad: bytes, tail: bytes) -> None:
    buffer = bytearray(encode_frame(1, b"a") + encode_frame(2, b"b") + bad + tail)
    walked = []
    with pytest.raises(ProtocolError) as caught:
        for kind, _, _ in scan_frames(buffer, LIMIT + 1):
            walked.append(kind)
    assert walked == [1, 2]
    assert str(caught.value) == str(length_error(int.from_bytes(bad, "big"), LIMIT + 1))


@pytest.mark.parametrize("bad", BAD_PREFIXES)
def test_byte_by_byte_every_frame_comes_out_then_the_error_at_the_fourth_byte(bad: bytes) -> None:
    good = [Frame(1, b"one"), Frame(2, b""), Frame(3, b"x" * LIMIT)]
    data = b"".join(encode_frame(f.kind, f.body) for f in good) + bad + b"\x05trailing garbage"
    reader = FrameReader(LIMIT)
    out: list[Frame] = []
    with pytest.raises(ProtocolError) as caught:
        for fed in range(1, len(data) + 1):
            reader.receive_data(data[fed - 1 : fed])
            out.extend(reader.frames())
    assert out == good
    assert fed == len(data) - len(b"\x05trailing garbage")  # the prefix's fourth byte
    assert str(caught.value) == str(length_error(int.from_bytes(bad, "big"), LIMIT + 1))


def test_next_frame_takes_one_frame_and_checks_the_prefix_like_frames() -> None:
    reader = FrameReader(LIMIT)
    reader.append(encode_frame(1, b"a") + encode_frame(2, b"b") + encode_frame(3)[:2])
    assert reader.next_frame() == Frame(1, b"a")
    assert reader.next_frame() == Frame(2, b"b")
    assert reader.next_frame() is None
    assert reader.buffered == 2
    broken = FrameReader(LIMIT)
    broken.append(OVERSIZE)
    with pytest.raises(FrameTooLarge, match=f"limit is {LIMIT}$"):
        broken.next_frame()


@given(st.binary(max_size=600))
def test_what_scan_frames_yields_encodes_back_to_the_bytes_it_walked(data: bytes) -> None:
    buffer = bytearray(data)
    rebuilt = b""
    try:
        for kind, start, stop in scan_frames(buffer, LIMIT + 1):
            rebuilt += encode_frame(kind, bytes(buffer[start:stop]))
    except ProtocolError as exc:
        assert str(exc).startswith(("frame length 0", "frame of "))
    assert data.startswith(rebuilt)


# -- every reader by the same rules: FrameReader (control socket, handshakes), HubIngress (the
# relay), BroadcastReader with and without its C loop (the worker) -----------------------------

MESSAGE_SIZE = 200
MAX_LENGTH = max_body_size(MESSAGE_SIZE) + 1  # the largest length prefix any of them accepts

broadcast_values = st.lists(
    st.one_of(st.integers(), st.text(max_size=30), st.binary(max_size=MESSAGE_SIZE - 5)),
    max_size=8,
)
bad_lengths = st.sampled_from([0, MAX_LENGTH + 1, 2**32 - 1]) | st.integers(
    MAX_LENGTH + 1, 2**32 - 1
)
# Garbage after the prefix, often starting with a kind byte some reader accepts.
tails = st.binary(max_size=40) | st.sampled_from([1, 3, 4, 5, 6]).flatmap(
    lambda kind: st.binary(max_size=40).map(lambda rest: bytes([kind]) + rest)
)


def broadcasts_then(values: list[object], bad_length: int, tail: bytes) -> tuple[bytes, int]:
    """Good broadcasts, then a bad length prefix and whatever follows it; and where the prefix
    ends."""
    good = b"".join(encode_broadcast(cbor2.dumps(v), MESSAGE_SIZE) for v in values)
    return good + bad_length.to_bytes(4, "big") + tail, len(good) + 4


@pytest.mark.parametrize("bad_length", [0, MAX_LENGTH + 1], ids=["zero", "oversize"])
# What follows the prefix must not matter: a kind byte some reader accepts, or junk.
@pytest.mark.parametrize(
    "tail", [b"\x05" + bytes(40), b"\x04", b"\xff" * 3], ids=["broadcast", "heartbeat", "junk"]
)
@pytest.mark.parametrize("reader", READERS)
def test_byte_by_byte_every_reader_lets_out_every_broadcast_then_the_same_error(
    reader: str, bad_length: int, tail: bytes
) -> None:
    values: list[object] = [1, "two", b"three" * 30, None]
    data, prefix_end = broadcasts_then(values, bad_length, tail)
    outcome = read_broadcasts(reader, data, 1, MESSAGE_SIZE)
    expected = length_error(bad_length, MAX_LENGTH)
    assert outcome.values == values
    assert outcome.error == (type(expected), str(expected))
    assert outcome.fed == prefix_end  # as soon as the prefix's four bytes are in


@given(broadcast_values, bad_lengths, tails, st.integers(1, 300))
def test_every_reader_reports_a_bad_prefix_alike_whatever_the_chunking(
    values: list[object], bad_length: int, tail: bytes, step: int
) -> None:
    data, prefix_end = broadcasts_then(values, bad_length, tail)
    expected = length_error(bad_length, MAX_LENGTH)
    reported_at = min(len(data), -(-prefix_end // step) * step)  # the chunk with its 4th byte
    for reader in READERS:
        outcome = read_broadcasts(reader, data, step, MESSAGE_SIZE)
        assert outcome.error == (type(expected), str(expected)), reader
        assert outcome.fed == reported_at, reader
        # In order, none invented; FrameReader and BroadcastReader raise, which drops what they
        # had split from the chunk that brought the error (their callers drop the stream too).
        assert outcome.values == values[: len(outcome.values)], reader
    # The relay keeps them all: a worker's last good broadcasts still go out.
    assert read_broadcasts("HubIngress", data, step, MESSAGE_SIZE).values == values
