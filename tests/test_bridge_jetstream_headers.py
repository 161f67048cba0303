"""The JetStream adapter's pure parts: the header codec and the seq arithmetic, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stereo.bridge.broker import Batch, Entry
from stereo.bridge.jetstream_headers import (
    COUNT,
    EXPECTED_LAST_SEQUENCE,
    FIRST,
    HUB,
    MSG_ID,
    NUMBER,
    MalformedEntry,
    decode_entry,
    encode_headers,
    every_hub,
    hub_subject,
    merge,
    next_seq,
    stream_names,
)


def test_headers_of_a_batch() -> None:
    headers = encode_headers(Batch("hub-1", 7, 3, b"abc"), first=41, after=12)
    assert headers == {
        MSG_ID: "hub-1-7",
        EXPECTED_LAST_SEQUENCE: "12",
        FIRST: "41",
        COUNT: "3",
        HUB: "hub-1",
        NUMBER: "7",
    }


@given(
    hub=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    number=st.integers(0, 2**64 - 1),
    count=st.integers(1, 10**6),
    first=st.integers(1, 2**63),
    after=st.integers(0, 2**63),
    frames=st.binary(max_size=64),
)
def test_round_trip(
    hub: str, number: int, count: int, first: int, after: int, frames: bytes
) -> None:
    headers = encode_headers(Batch(hub, number, count, frames), first, after)
    entry = decode_entry(headers, frames)
    assert entry == Entry(first, count, hub, number, frames)
    assert next_seq(entry) == first + count


def test_an_empty_stream_starts_at_one() -> None:
    assert next_seq(None) == 1


@pytest.mark.parametrize(
    ("first", "after", "count"), [(0, 0, 1), (1, -1, 1), (1, 0, 0)], ids=["first", "after", "empty"]
)
def test_encode_refuses_what_cannot_be_numbered(first: int, after: int, count: int) -> None:
    with pytest.raises(ValueError):
        encode_headers(Batch("h", 1, count, b""), first, after)


@pytest.mark.parametrize("hub", ["", "a b", "a\r\nNats-Msg-Id: x", "é"])
def test_encode_refuses_hub_ids_a_header_cannot_carry(hub: str) -> None:
    with pytest.raises(ValueError):
        encode_headers(Batch(hub, 1, 1, b"x"), 1, 0)


GOOD = {FIRST: "5", COUNT: "2", HUB: "h", NUMBER: "1"}


@pytest.mark.parametrize(
    "change",
    [
        {FIRST: None},
        {COUNT: None},
        {HUB: None},
        {HUB: ""},
        {NUMBER: None},
        {FIRST: "0"},
        {COUNT: "0"},
        {FIRST: "-3"},
        {FIRST: " 5"},
        {FIRST: "+5"},
        {COUNT: "1_0"},
        {COUNT: "٣"},  # a digit to str.isdigit, not to the header's writer
        {NUMBER: "x"},
    ],
)
def test_foreign_messages_are_malformed(change: dict[str, str | None]) -> None:
    headers = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(MalformedEntry):
        decode_entry(headers, b"..")


def test_a_message_without_headers_is_malformed() -> None:
    with pytest.raises(MalformedEntry):
        decode_entry(None, b"x")
    assert decode_entry(GOOD, None).frames == b""


def test_merge_makes_one_batch_numbered_as_the_last() -> None:
    one = Batch("h", 4, 2, b"ab")
    assert merge([one]) is one
    assert merge([one, Batch("h", 5, 1, b"c"), Batch("h", 7, 3, b"def")]) == Batch(
        "h", 7, 6, b"abcdef"
    )
    for bad in ([], [one, Batch("g", 5, 1, b"c")], [one, Batch("h", 4, 1, b"c")]):
        with pytest.raises(ValueError):
            merge(bad)


def test_hub_subjects() -> None:
    assert every_hub("stereo.chat") == "stereo.chat.*"
    assert hub_subject("stereo.chat", "0f3a-b_c") == "stereo.chat.0f3a-b_c"
    for bad in ("", "a.b", "a*", ">", "a b"):
        with pytest.raises(ValueError):
            hub_subject("stereo.chat", bad)


def test_stream_names() -> None:
    assert stream_names("chat-1_x") == ("STEREO_chat-1_x", "stereo.chat-1_x")
    for bad in ("", "a.b", "a*", ">", "a b", "x" * 201):
        with pytest.raises(ValueError):
            stream_names(bad)
