"""The worker's decoder of the master's stream: the C accelerator against the Python reference.

Both paths must give the same messages, in the same order, for any chunking of any stream, and
the same error for a bad frame; the C loop hands back to Python every frame it does not handle
(big payloads, undecodable ones, bad headers), so these tests feed it all of those.
"""

from __future__ import annotations

import os
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stereo.errors import ProtocolError
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import (
    BroadcastReader,
    Kind,
    Message,
    UndecodablePayload,
    accelerated,
    encode_broadcast,
)

LIMIT = 256 * 1024
BOTH = [pytest.param(True, id="C"), pytest.param(False, id="python")]

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
# A raw payload: a value, a big one (decoded in place by the Python path) or bytes that are not
# CBOR (a peer that bypassed stereo's encoder).
payloads = st.one_of(
    values.map(cbor2.dumps),
    st.integers(16 * 1024, 40 * 1024).map(lambda n: cbor2.dumps(b"b" * n)),
    st.sampled_from([b"\xff", b"\x1c", b"\x5a\x00\x00"]),
)


def decode_all(stream: bytes, cuts: list[int], accelerate: bool) -> list[Message]:
    reader = BroadcastReader(LIMIT, accelerate=accelerate)
    out: list[Message] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.receive_data(stream[start:cut])
        start = max(start, cut)
        out.extend(reader.deliveries())
    return out


def comparable(message: Message) -> tuple[Any, int, int]:
    data = message.data
    if isinstance(data, UndecodablePayload):
        data = ("undecodable", data.raw)
    return (data, message.sender, message.seq)


def test_the_accelerator_is_built() -> None:
    # CI builds it (setup.py); without a C compiler stereo still works, but this says so loudly.
    if os.environ.get("STEREO_PURE_PYTHON"):
        pytest.skip("STEREO_PURE_PYTHON is set: testing the pure Python path on purpose")
    assert accelerated(), "stereo.wire._speedups did not build: install a C compiler and reinstall"


def test_the_c_relay_is_built() -> None:
    # Its tests skip without it (tests/test_crelay*.py, the C legs of the relay_plane fixture):
    # CI must not pass them by skipping.
    if os.environ.get("STEREO_PURE_PYTHON"):
        pytest.skip("STEREO_PURE_PYTHON is set: testing the pure Python path on purpose")
    from stereo.accelerations import accelerations

    assert accelerations()["relay"], "stereo.master._relay did not build (a C compiler, Linux)"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(payloads, st.integers(0, 2**32 - 1)), max_size=12),
    st.lists(st.integers(0, 200_000), max_size=6),
)
def test_both_paths_decode_any_stream_alike(
    items: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    stream = b"".join(
        encode_broadcast(payload, LIMIT, seq=seq, sender=sender)
        for seq, (payload, sender) in enumerate(items, start=2**40)
    )
    fast = decode_all(stream, cuts, accelerate=True)
    slow = decode_all(stream, cuts, accelerate=False)
    assert [comparable(m) for m in fast] == [comparable(m) for m in slow]
    assert [(m.sender, m.seq) for m in fast] == [
        (sender, seq) for seq, (_, sender) in enumerate(items, start=2**40)
    ]
    for message, (payload, _) in zip(fast, items, strict=True):
        if isinstance(message.data, UndecodablePayload):
            assert message.data.raw == payload
        else:
            assert message.data == cbor2.loads(payload)


@pytest.mark.parametrize("accelerate", BOTH)
def test_messages_are_named_tuples_shared_by_value(accelerate: bool) -> None:
    reader = BroadcastReader(LIMIT, accelerate=accelerate)
    reader.receive_data(encode_broadcast(cbor2.dumps({"a": [1, 2]}), LIMIT, seq=7, sender=3))
    [message] = reader.deliveries()
    assert type(message) is Message
    assert message == Message({"a": [1, 2]}, 3, 7)
    data, sender, seq = message
    assert (data, sender, seq) == ({"a": [1, 2]}, 3, 7)


@pytest.mark.parametrize("accelerate", BOTH)
@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (
            encode_frame(Kind.WELCOME, bytes(16)),
            "unexpected frame from the master: WELCOME, length 17",
        ),
        (
            (LIMIT + 100).to_bytes(4, "big") + bytes([Kind.BROADCAST]) + bytes(16),
            # Worded by stereo.wire.framing.length_error, as by every other reader.
            f"frame of {LIMIT + 99} bytes announced; the limit is {LIMIT + 12}",
        ),
        (
            (5).to_bytes(4, "big") + bytes([Kind.BROADCAST]) + bytes(12),
            "unexpected frame from the master: BROADCAST, length 5",
        ),
        (
            bytes(4) + bytes([Kind.BROADCAST]) + bytes(16),
            "frame length 0: a frame holds at least its kind byte",
        ),
        (
            (LIMIT + 100).to_bytes(4, "big"),  # no more than the prefix: refused already
            f"frame of {LIMIT + 99} bytes announced; the limit is {LIMIT + 12}",
        ),
    ],
    ids=["wrong-kind", "oversize", "too-short", "zero-length", "oversize-prefix-only"],
)
def test_a_bad_frame_after_good_ones_raises_the_same_error(
    accelerate: bool, frame: bytes, error: str
) -> None:
    reader = BroadcastReader(LIMIT, accelerate=accelerate)
    good = encode_broadcast(cbor2.dumps("ok"), LIMIT, seq=1, sender=1)
    reader.receive_data(good + good + frame)
    with pytest.raises(ProtocolError, match=error):
        reader.deliveries()


@pytest.mark.skipif(not accelerated(), reason="the C accelerator is not built")
def test_the_c_loop_checks_its_arguments() -> None:
    from stereo.wire._speedups import decode_broadcasts

    out: list[Any] = []
    with pytest.raises(TypeError, match="bytearray"):
        decode_broadcasts(b"", 0, 10, 10, 5, cbor2.loads, Message, out)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tuple subclass"):
        decode_broadcasts(bytearray(), 0, 10, 10, 5, cbor2.loads, dict, out)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        decode_broadcasts(bytearray(), -1, 10, 10, 5, cbor2.loads, Message, out)
    assert out == []


def test_missing_is_the_rest_of_a_big_frame_and_bounded() -> None:
    reader = BroadcastReader(LIMIT)
    frame = encode_broadcast(cbor2.dumps(b"b" * 100_000), LIMIT, seq=1, sender=1)
    reader.receive_data(frame[:1000])
    assert reader.missing == len(frame) - 1000  # the worker reads the rest in one go
    liar = BroadcastReader(LIMIT)
    liar.receive_data((2**32 - 1).to_bytes(4, "big") + bytes([Kind.BROADCAST]))
    assert liar.missing == 4 + LIMIT + 13  # the largest frame allowed, not 4 GiB


@pytest.mark.parametrize("size", [0, 1, 64, 70_000])
def test_the_c_frame_builder_matches_the_header_layout(size: int) -> None:
    from stereo.wire.protocol import _frame_broadcast_py, frame_broadcast

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = frame_broadcast(payload, Kind.BROADCAST)
    assert frame == _frame_broadcast_py(payload, Kind.BROADCAST)
    reader = BroadcastReader(LIMIT)
    reader.receive_data(frame)  # and it reads back as one broadcast with seq and sender 0
    [message] = reader.deliveries()
    assert (message.sender, message.seq) == (0, 0)
    if isinstance(message.data, UndecodablePayload):  # these bytes are rarely valid CBOR
        assert message.data.raw == payload
