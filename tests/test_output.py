"""Worker output: splitting it into lines (pure), and where the output task writes it."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
from collections import Counter
from pathlib import Path

import psutil
import trio
import trio.testing
from conftest import LOG_PREFIX, ctl, open_stereo

from stereo.master.output import (
    MAX_LINE,
    LineSplitter,
    OutputBuffer,
    OutputSink,
    OutputStatistics,
    WorkerSource,
    _worker_marker,
    pump_lines,
)


def plain(data: list[bytes]) -> list[str]:
    """Written lines, the master's own without their time and level."""
    return [LOG_PREFIX.sub("", line) for line in b"".join(data).decode().splitlines()]


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
    usual: list[bytes] = []
    other: list[bytes] = []
    sink = OutputSink(writer=usual.append)
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
    assert plain(usual) == ["[stereo] one", "[stereo] three"]
    assert plain(other) == ["[stereo] two"]


# -- the buffer's policy (pure) -------------------------------------------------------------------


def line(worker: int, text: str) -> bytes:
    return f"[worker {worker}] {text}\n".encode()


def marker(gap: Counter[int]) -> bytes:
    return f"[stereo] {_worker_marker(gap)}\n".encode()  # the buffer's default note


def drain(buffer: OutputBuffer) -> bytes:
    written = b""
    while buffer.queued:
        batch = buffer.take()
        written += batch.data
        buffer.release(batch)
    return written


def test_worker_lines_over_the_limit_are_dropped_counted_and_announced_where_they_are_missing() -> (
    None
):
    buffer = OutputBuffer(limit=300, log_limit=100)
    a, b = line(1, "a" * 88), line(2, "b" * 88)  # 100 bytes each
    assert buffer.add_worker_lines(1, a, 1) and buffer.add_worker_lines(2, b, 1)
    assert not buffer.add_worker_lines(1, a * 3, 3)  # 500 > 300: dropped, never waited for
    assert not buffer.add_worker_lines(2, b, 1)  # it would fit, but the gap is still open
    assert buffer.held == 200 and buffer.statistics().worker_lines_dropped == {1: 3, 2: 1}

    first = buffer.take(limit=150)  # one entry; its bytes count until it is released
    assert first.data == a and buffer.held == 200
    assert not buffer.add_worker_lines(1, a, 1)  # still over half the limit: still dropping
    buffer.release(first)  # under half: the gap is closed by a marker, right after b
    assert buffer.add_worker_lines(1, a, 1)
    marker = b"[stereo] 5 lines of worker output dropped (stdout not keeping up): worker 1: 4,"
    assert drain(buffer) == b + marker + b" worker 2: 1\n" + a
    assert buffer.held == 0
    assert buffer.statistics() == OutputStatistics(0, {1: 4, 2: 1}, 0)


def test_the_marker_comes_when_stdout_catches_up_even_if_the_workers_went_quiet() -> None:
    buffer = OutputBuffer(limit=100, log_limit=100)
    a = line(1, "a" * 60)
    assert buffer.add_worker_lines(1, a, 1)
    assert not buffer.add_worker_lines(1, a, 1)
    assert drain(buffer) == a + marker(Counter({1: 1}))
    assert not buffer.queued and buffer.held == 0


def test_an_entry_bigger_than_the_limit_is_announced_at_once() -> None:
    buffer = OutputBuffer(limit=100, log_limit=100)
    assert not buffer.add_worker_lines(3, line(3, "x" * 200), 5)
    assert drain(buffer) == marker(Counter({3: 5}))


def test_the_masters_lines_keep_their_room_while_worker_lines_are_dropped() -> None:
    buffer = OutputBuffer(limit=100, log_limit=100)
    a = line(1, "a" * 60)
    assert buffer.add_worker_lines(1, a, 1)
    assert not buffer.add_worker_lines(1, a, 1)
    assert buffer.add_log(b"[stereo] one\n") and buffer.add_log(b"[stereo] two\n")
    assert drain(buffer) == (a + b"[stereo] one\n[stereo] two\n" + marker(Counter({1: 1})))


def test_the_masters_lines_over_their_own_cap_are_counted_and_announced() -> None:
    buffer = OutputBuffer(limit=100, log_limit=40)
    lines = [f"[stereo] line {n}\n".encode() for n in range(5)]  # 16 bytes each
    assert [buffer.add_log(data) for data in lines] == [True, True, False, False, False]
    assert buffer.statistics().log_lines_dropped == 3
    assert drain(buffer) == (
        lines[0]
        + lines[1]
        + b"[stereo] 3 lines of the master's own output dropped (stdout not keeping up)\n"
    )


async def test_a_stuck_stdout_never_stops_the_pump_and_the_log_survives() -> None:
    gate = threading.Event()
    blocked = trio.Event()
    written: list[bytes] = []
    token = trio.lowlevel.current_trio_token()

    def stuck_writer(data: bytes) -> None:
        trio.from_thread.run_sync(blocked.set, trio_token=token)
        gate.wait()
        written.append(data)

    sink = OutputSink(writer=stuck_writer, limit=64 * 1024, log_limit=4096)
    send, receive = trio.testing.memory_stream_one_way_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.run)
            sink.log("before")
            await blocked.wait()  # the writer holds "before" and stays stuck
            pump = trio.Event()

            async def pump_all() -> None:
                await pump_lines(receive, WorkerSource(7, 4242), sink)
                pump.set()

            nursery.start_soon(pump_all)
            for n in range(20_000):  # ~0.3 MB of lines, five times the buffer
                await send.send_all(f"line {n}\n".encode())
            sink.log("while stuck")
            await send.aclose()
            await pump.wait()  # the pipe was read to its end while nothing got written
            assert written == []
            gate.set()
            await sink.flush()
            nursery.cancel_scope.cancel()
    lines = plain(written)
    assert lines[0] == "[stereo] before" and "[stereo] while stuck" in lines
    numbers = [int(text.split()[-1]) for text in lines if text.startswith("[worker 7] line ")]
    dropped = sink.statistics().worker_lines_dropped[7]
    assert dropped > 0 and len(numbers) + dropped == 20_000
    assert numbers == sorted(numbers)
    assert f"[stereo] {dropped} lines of worker output dropped" in "\n".join(lines)


# -- end to end: a master whose stdout nobody reads -----------------------------------------------

FLOOD = re.compile(r"^\[worker 1\] flood (\d+) ")
DROPPED = re.compile(
    r"^\[stereo\] (\d+) lines of worker output dropped \(stdout not keeping up\): (.*)$"
)


async def receive_line(stream: trio.SocketStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        assert chunk, f"the app hung up (killed?) after {data!r}"
        data += chunk
    return data.decode().strip()


def flood_accounting(lines: list[str]) -> tuple[int, int]:
    """Walk the output: every gap in worker 1's numbered lines must be announced, exactly, by the
    markers just before the line after it. Returns (lines seen, drops announced for worker 1)."""
    expected = seen = announced = pending = 0
    for line in lines:
        if match := DROPPED.match(line):
            per_worker = dict(part.split(": ") for part in match[2].split(", "))
            assert sum(map(int, per_worker.values())) == int(match[1]), line
            pending += int(per_worker.get("worker 1", 0))
        elif match := FLOOD.match(line):
            assert int(match[1]) == expected + pending, (line, expected, pending)
            expected = int(match[1]) + 1
            seen += 1
            announced += pending
            pending = 0
    return seen, announced + pending


async def test_a_stuck_stdout_costs_worker_lines_with_a_marker_never_a_worker(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "ctl.sock")
    path = str(tmp_path / "chatty.sock")
    with trio.fail_after(60), trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        await listener.bind(path)
        listener.listen()
        args = ("chatty:serve", "-w", "1", "--timeout", "2", "--control", control)
        async with open_stereo(*args, env={"CHATTY_SOCKET": path}) as stereo:
            await stereo.wait_for(r"^\[stereo\] control socket: ")
            first = trio.SocketStream((await listener.accept())[0])
            _, worker_id, pid = (await receive_line(first)).split()
            assert worker_id == "1"

            # From here on nobody reads the master's stdout: its pipe fills, then its buffer.
            stereo.pause_reading()
            rss_before = psutil.Process(stereo.pid).memory_info().rss
            await first.send_all(b"go\n")
            # Worker 1 printed ~8 MiB and went on printing for two --timeouts: it never blocked.
            count = int((await receive_line(first)).split()[1])
            growth = psutil.Process(stereo.pid).memory_info().rss - rss_before
            # The master's own line (it logs before it spawns worker 2, which then says hello).
            stereo.signal(signal.SIGTTIN)
            second = trio.SocketStream((await listener.accept())[0])
            assert (await receive_line(second)).split()[1] == "2"
            code, out, err = await ctl("status", "--json", "--control", control)
            assert (code, err) == (0, "")
            rows = {row["slot"]: row for row in json.loads(out)}
            assert (rows[1]["pid"], rows[1]["restarts"]) == (int(pid), 0)

            stereo.resume_reading()
            while sum(flood_accounting(stereo.lines)) < count:
                await stereo.wait_for(".", start=len(stereo.lines))
            seen, dropped = flood_accounting(stereo.lines)
            assert (seen + dropped, seen > 0, dropped > 0) == (count, True, True)
            print(f"MEASURE stuck stdout: {count} lines printed, {seen} written, {dropped} dropped")
            print(f"MEASURE stuck stdout: master RSS +{growth / 2**20:.1f} MiB, buffer full")
            await stereo.wait_for(r"^\[stereo\] SIGTTIN: added worker \[2\]$")
            assert not [line for line in stereo.lines if "no heartbeat" in line]
            await first.aclose()
            await second.aclose()
