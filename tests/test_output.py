"""Splitting worker output into lines (pure)."""

from __future__ import annotations

from stereo.master.output import MAX_LINE, LineSplitter


def test_lines_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.feed(b"o\nthree") == [b"two"]
    assert splitter.flush() == [b"three"]
    assert splitter.flush() == []


def test_an_endless_line_is_cut_not_buffered_forever() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"x" * (MAX_LINE * 2 + 10))
    assert out == [b"x" * MAX_LINE, b"x" * MAX_LINE]
    assert splitter.flush() == [b"x" * 10]
