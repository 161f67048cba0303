"""The republished entries kept for a JetStream reader (stereo/bridge/jetstream_stored.py): no
server, byte-free bookkeeping by stream seq."""

from __future__ import annotations

from stereo.bridge.jetstream_stored import STREAM_SEQUENCE, Stored


def republished(seq: int) -> dict[str, str]:
    return {STREAM_SEQUENCE: str(seq), "Stereo-First": "1"}


def seqs(stored: Stored, start: int) -> list[int]:
    return [seq for seq, _, _ in stored.take(start)]


def test_entries_are_handed_over_in_order_up_to_the_first_hole() -> None:
    stored = Stored(limit=10, retention=100)
    for seq in (3, 1, 2, 5):
        stored.put(republished(seq), f"e{seq}".encode())
    taken = list(stored.take(1))
    assert [(seq, data) for seq, _, data in taken] == [(1, b"e1"), (2, b"e2"), (3, b"e3")]
    assert seqs(stored, 4) == []  # 4 never came: the reader asks the stream for it
    assert len(stored) == 1
    assert seqs(stored, 6) == [] and len(stored) == 0  # 5 is behind the reader now: dropped


def test_what_is_behind_the_reader_or_past_the_limit_is_not_kept() -> None:
    stored = Stored(limit=2, retention=100)
    assert seqs(stored, 5) == []
    for seq in (4, 5, 6, 7):
        stored.put(republished(seq), b"")
    assert len(stored) == 2
    assert seqs(stored, 5) == [5, 6]
    assert seqs(stored, 7) == []  # was over the limit when it came


def test_an_entry_the_stream_has_trimmed_since_is_not_handed_over() -> None:
    stored = Stored(limit=100, retention=5)
    for seq in range(1, 11):
        stored.put(republished(seq), b"")
    assert seqs(stored, 5) == []  # 10 - 5: trimmed by now, the stream says Gap
    assert seqs(stored, 6) == [6, 7, 8, 9, 10]


def test_messages_without_a_stream_seq_are_ignored_and_forget_empties() -> None:
    stored = Stored(limit=10, retention=100)
    stored.put(None, b"")
    stored.put({STREAM_SEQUENCE: "x"}, b"")
    assert len(stored) == 0
    stored.put(republished(1), b"")
    stored.forget()
    assert seqs(stored, 1) == []
