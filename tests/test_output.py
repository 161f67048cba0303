"""Worker output: splitting it into lines (pure), and where the output task writes it."""

from __future__ import annotations

import trio

from stereo.master.output import MAX_LINE, LineSplitter, OutputSink


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


async def test_redirect_sends_output_elsewhere_until_it_ends() -> None:
    plain: list[bytes] = []
    other: list[bytes] = []
    sink = OutputSink(writer=plain.append)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.run)
            sink.log("one")
            await sink.flush()
            with sink.redirect(other.append):
                sink.log("two")
                await sink.flush()
            sink.log("three")
            await sink.flush()
            nursery.cancel_scope.cancel()
    assert plain == [b"[stereo] one\n", b"[stereo] three\n"]
    assert other == [b"[stereo] two\n"]
