"""The C loop decodes a run of tag-free payloads with one cbor2 call (a CBOR array of them all):
that must give exactly what one call per payload gives, values and errors alike, whatever the
payloads are, and the one call must really be what happens for tag-free runs (not for tagged)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_broadcast_reader import LIMIT, decode_all

from stereo.wire.nesting import MAX_DEPTH
from stereo.wire.protocol import (
    Kind,
    Message,
    UndecodablePayload,
    _decode,
    accelerated,
    encode_broadcast,
)

# Tags cbor2 gives a meaning to (dates, bignums, value sharing 28/29, string references 256/25,
# sets, ...), so that tagged payloads decode, or fail, in all their ways; and any other number.
TAGS = st.sampled_from([0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 37, 256, 258, 260, 40000, 55799])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),  # beyond 64 bits: bignums, tags 2 and 3
    st.floats(),  # nan, infinities and -0.0 included
    st.text(max_size=12),  # any code point
    st.binary(max_size=20),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4),
        st.builds(cbor2.CBORTag, TAGS | st.integers(0, 2**64 - 1), inner),
        st.builds(lambda item: [item, item, "repeated text"], inner),  # shared when value_sharing
    ),
    max_leaves=10,
)


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    value = draw(values)
    sharing, referencing = draw(st.tuples(st.booleans(), st.booleans()))
    try:
        return cbor2.dumps(value, value_sharing=sharing, string_referencing=referencing)
    except Exception:  # a tag number the encoder takes for one of its own, say
        assume(False)
        raise


def deep(depth: int) -> list[bytes]:
    """Items nested `depth` containers deep, of each kind (cbor2 refuses more than MAX_DEPTH)."""
    return [
        b"\x81" * depth + b"\x01",
        b"\xa1\x01" * depth + b"\x01",
        b"\x9f" * depth + b"\x01" + b"\xff" * depth,
        b"\xd9\x9c\x40" * depth + b"\x01",
    ]


JUNK = [
    b"",
    b"\xff",  # a lone break
    b"\x1c",  # a reserved additional information
    b"\xf8\x10",  # a simple value cbor2 refuses
    b"\x62\xff\xfe",  # invalid UTF-8, at the top...
    b"\x82\x01\x62\xff\xfe",  # ...and inside an array
    b"\x01\x02",  # two items: cbor2 decodes the first, an array would take both
    b"\x9f\x01\x02\xff",  # containers and strings of indefinite length
    b"\xbf\x61a\x01\xff",
    b"\x7f\x61a\x62\xc3\xa9\xff",
    b"\x5f\x41a\xff",
    b"\x9f\x01",  # truncated
    b"\x80\xff",  # an array, then a break
    b"\xd8\x1d\x00",  # a shared reference to nothing
    b"\xd8\x1c\x81\xd8\x1d\x00",  # a list that holds itself
    b"\xd9\x01\x00\x82\x63abc\xd8\x19\x00",  # a string reference
]
junk = st.one_of(
    st.sampled_from(JUNK),
    st.sampled_from([item for d in range(MAX_DEPTH - 3, MAX_DEPTH + 2) for item in deep(d)]),
    st.tuples(encoded(), st.integers(0, 100)).map(lambda pair: pair[0][: pair[1]]),
    st.tuples(encoded(), encoded()).map(b"".join),
    st.binary(max_size=12),
)
payloads = encoded() | junk


def comparable(data: Any) -> tuple[Any, ...]:
    """What a decoded value is, nan and shared references included."""
    if isinstance(data, UndecodablePayload):
        return ("undecodable", data.raw, data.error)
    try:
        # Bit for bit, with shared (even cyclic) references marked: nan is not equal to itself.
        return ("cbor", cbor2.dumps(data, value_sharing=True))
    except Exception:
        return ("repr", type(data), repr(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads, max_size=40), st.lists(st.integers(0, 30_000), max_size=4))
def test_bulk_decoding_gives_what_one_call_per_payload_gives(
    items: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(
        encode_broadcast(payload, LIMIT, seq=seq, sender=seq % 7)
        for seq, payload in enumerate(items)
    )
    expected = [
        (comparable(_decode(bytearray(payload))), seq % 7, seq) for seq, payload in enumerate(items)
    ]
    for accelerate in (True, False):
        messages = decode_all(stream, cuts, accelerate)
        assert [(comparable(m.data), m.sender, m.seq) for m in messages] == expected


class CountingLoads:
    """cbor2.loads, counting its calls; optionally doing something else with the bulk ones."""

    def __init__(self, bulk: Callable[[bytes], Any] | None = None) -> None:
        self.calls: list[bytes] = []
        self.bulk = bulk

    def __call__(self, data: bytes) -> Any:
        self.calls.append(data)
        if self.bulk is not None and len(self.calls) == 1:
            return self.bulk(data)
        return cbor2.loads(data)


def run_c_loop(payloads: list[bytes], loads: Callable[[bytes], Any]) -> tuple[int, list[Any], int]:
    """Call the C loop once on frames of these payloads: (offset reached, messages, end)."""
    from stereo.wire._speedups import decode_broadcasts

    buffer = bytearray(
        b"".join(encode_broadcast(p, LIMIT, seq=i, sender=1) for i, p in enumerate(payloads))
    )
    out: list[Any] = []
    max_length = LIMIT + 13  # the reader's: the body's kind byte and stamp come on top
    offset = decode_broadcasts(
        buffer, 0, max_length, 16 * 1024, Kind.BROADCAST, loads, Message, out
    )
    return offset, out, len(buffer)


PLAIN = [cbor2.dumps(["d", n, b"x" * 64]) for n in range(10)]
TAGGED = [cbor2.dumps([cbor2.CBORTag(40000, n)]) for n in range(10)]
needs_c = pytest.mark.skipif(not accelerated(), reason="the C accelerator is not built")


@needs_c
@pytest.mark.parametrize(
    ("payloads", "calls"),
    [
        (PLAIN, 1),  # one call for the whole run
        (TAGGED, 10),  # tags keep their payload out of it
        (PLAIN[:3] + TAGGED[:1] + PLAIN[3:6], 3),  # a tag splits a run in two
        (PLAIN[:1] + TAGGED[:1] + PLAIN[1:2], 3),  # a run takes two frames at least
        ([*PLAIN[:4], cbor2.dumps(1) + b"\x00", *PLAIN[4:8]], 3),  # so do two items
        (PLAIN[:2] + deep(MAX_DEPTH) + PLAIN[2:4], 2 + 4),  # as does what the array makes too deep
        (PLAIN[:2] + deep(MAX_DEPTH - 1)[:3] + PLAIN[2:4], 1),  # but not one level less
    ],
    ids=["plain", "tagged", "split", "lone", "two-items", "too-deep", "deep"],
)
def test_the_bulk_call_is_made_for_tag_free_runs_only(payloads: list[bytes], calls: int) -> None:
    loads = CountingLoads()
    offset, out, end = run_c_loop(payloads, loads)
    assert (offset, len(out)) == (end, len(payloads))
    assert [m.data for m in out] == [cbor2.loads(p) for p in payloads]
    assert all(type(m) is Message for m in out)
    assert len(loads.calls) == calls


@needs_c
@pytest.mark.parametrize(
    ("count", "size", "calls"),
    [
        (23, 10, 1),  # the array's head in one byte,
        (24, 10, 1),  # in two,
        (256, 10, 1),  # in three
        (1024, 10, 1),
        (2500, 10, 3),  # 1024 payloads a call at most,
        (60, 10_000, 3),  # 256 KiB at most
    ],
)
def test_runs_are_bounded(count: int, size: int, calls: int) -> None:
    payloads = [cbor2.dumps([n, b"x" * size]) for n in range(count)]
    loads = CountingLoads()
    offset, out, end = run_c_loop(payloads, loads)
    assert (offset, [m.data for m in out]) == (end, [[n, b"x" * size] for n in range(count)])
    assert [m.seq for m in out] == list(range(count))
    assert len(loads.calls) == calls


@needs_c
def test_a_refused_bulk_call_falls_back_to_one_call_per_payload() -> None:
    # Invalid UTF-8 passes the walk: the bulk call fails, the run is decoded payload by payload
    # up to the bad one, where the C loop stops for Python to wrap the error, as before.
    payloads = [*PLAIN[:3], b"\x62\xff\xfe", *PLAIN[3:6]]
    loads = CountingLoads()
    offset, out, _ = run_c_loop(payloads, loads)
    assert [m.data for m in out] == [cbor2.loads(p) for p in PLAIN[:3]]
    assert offset == 3 * (17 + len(PLAIN[0]))  # the bad frame
    assert len(loads.calls) == 1 + 4
    assert loads.calls[1:] == payloads[:4]


@needs_c
@pytest.mark.parametrize(
    "bulk",
    [lambda data: tuple(cbor2.loads(data)), lambda data: cbor2.loads(data)[1:], lambda data: None],
    ids=["not-a-list", "short", "none"],
)
def test_a_bulk_result_that_is_not_the_list_falls_back(bulk: Callable[[bytes], Any]) -> None:
    loads = CountingLoads(bulk)
    offset, out, end = run_c_loop(PLAIN, loads)
    assert (offset, [m.data for m in out]) == (end, [cbor2.loads(p) for p in PLAIN])
    assert len(loads.calls) == 1 + len(PLAIN)


@needs_c
def test_a_keyboard_interrupt_in_the_bulk_call_goes_up() -> None:
    def interrupted(data: bytes) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_c_loop(PLAIN, CountingLoads(interrupted))
