"""The hub protocol on its own: stamping, runs, control frames, errors. No processes."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_helpers import run_deliveries

from stereo.errors import EncodeError, MessageTooLarge, ProtocolError
from stereo.wire.framing import Frame, FrameReader, encode_frame
from stereo.wire.protocol import (
    HubIngress,
    Kind,
    Run,
    decode_map,
    encode_broadcast,
    encode_cbor,
    encode_map,
)

LIMIT = 1024


def deliveries(run: Run) -> list[tuple[int, int, object]]:
    return [(d.seq, d.sender, cbor2.loads(d.payload)) for d in run_deliveries(run, LIMIT)]


def test_broadcasts_are_stamped_in_place_and_forwarded_as_one_run() -> None:
    ingress = HubIngress(sender=3, max_message_size=LIMIT)
    ingress.receive_data(b"".join(encode_broadcast(encode_cbor(i), LIMIT) for i in range(5)))
    events, next_seq = ingress.events(100)
    assert next_seq == 105
    assert len(events) == 1 and isinstance(events[0], Run)
    assert events[0].count == 5 and events[0].first_seq == 100
    assert deliveries(events[0]) == [(100 + i, 3, i) for i in range(5)]


def test_a_worker_cannot_forge_seq_or_sender() -> None:
    ingress = HubIngress(sender=2, max_message_size=LIMIT)
    ingress.receive_data(encode_broadcast(encode_cbor("x"), LIMIT, seq=999, sender=7))
    (run,), _ = ingress.events(1)
    assert isinstance(run, Run)
    assert deliveries(run) == [(1, 2, "x")]


def test_control_frames_split_runs() -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    b = encode_broadcast(encode_cbor("a"), LIMIT)
    ingress.receive_data(b + encode_frame(Kind.HEARTBEAT) + b + b)
    events, next_seq = ingress.events(1)
    assert [type(e) for e in events] == [Run, Frame, Run]
    assert events[1] == Frame(Kind.HEARTBEAT, b"")
    assert isinstance(events[2], Run) and events[2].count == 2
    assert next_seq == 4


def test_good_frames_before_garbage_are_kept_then_the_error() -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    good = encode_broadcast(encode_cbor("ok"), LIMIT)
    ingress.receive_data(good + b"\x00\x00\x00\x02\x99junk")
    events, next_seq = ingress.events(1)
    assert isinstance(events[0], Run) and deliveries(events[0]) == [(1, 1, "ok")]
    assert isinstance(events[1], ProtocolError)
    assert "may not send kind 0x99" in str(events[1])
    assert next_seq == 2


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x7f\xff\xff\xff\x05", "limit is"),  # huge prefix: refused before any body
        (b"\x7f\xff\xff\xff", "limit is"),  # as soon as its four bytes are there
        (b"\x00\x00\x00\x00\x05" + bytes(16), "frame length 0"),  # whatever byte follows
        (b"\x00\x00\x00\x00\x04", "frame length 0"),
        (encode_frame(Kind.BROADCAST, b"short"), "too short"),
        (encode_frame(Kind.WELCOME, b""), "may not send WELCOME"),
        (encode_frame(Kind.REPLY, b""), "may not send REPLY"),
    ],
)
def test_protocol_violations(data: bytes, message: str) -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    ingress.receive_data(data)
    events, _ = ingress.events(1)
    assert isinstance(events[-1], ProtocolError)
    assert message in str(events[-1])


def test_oversize_or_unencodable_broadcasts_raise_in_the_caller() -> None:
    with pytest.raises(MessageTooLarge, match="limit is 1024"):
        encode_broadcast(encode_cbor(b"x" * 2000), LIMIT)
    with pytest.raises(EncodeError, match="cannot encode"):
        encode_cbor(object())


def test_control_maps_round_trip_and_reject_non_maps() -> None:
    frame = FrameReader(LIMIT)
    frame.receive_data(encode_map(Kind.HELLO, {"version": 1, "pid": 42}))
    (hello,) = frame.frames()
    assert decode_map(hello) == {"version": 1, "pid": 42}
    with pytest.raises(ProtocolError, match="must be a CBOR map"):
        decode_map(Frame(Kind.HELLO, encode_cbor([1, 2])))
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        decode_map(Frame(Kind.HELLO, b"\xff\xff"))


@given(st.binary(max_size=3000), st.integers(1, 97))
def test_ingress_never_raises_and_never_buffers_past_the_limit(data: bytes, step: int) -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    seq = 1
    for i in range(0, len(data), step):
        ingress.receive_data(data[i : i + step])
        events, new_seq = ingress.events(seq)
        assert new_seq >= seq
        seq = new_seq
        if events and isinstance(events[-1], ProtocolError):
            return
        assert ingress.buffered <= LIMIT + 12 + 5 + step


@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(1, 64))
def test_ingress_relays_every_broadcast_whatever_the_chunking(
    payloads: list[bytes], step: int
) -> None:
    data = b"".join(encode_broadcast(encode_cbor(p), LIMIT) for p in payloads)
    ingress = HubIngress(sender=5, max_message_size=LIMIT)
    got: list[tuple[int, int, object]] = []
    seq = 1
    for i in range(0, len(data), step):
        ingress.receive_data(data[i : i + step])
        events, seq = ingress.events(seq)
        for event in events:
            assert isinstance(event, Run)
            got.extend(deliveries(event))
    assert got == [(i + 1, 5, p) for i, p in enumerate(payloads)]
