"""``stereo logs``, ``stereo ctl logs`` and the ``logs`` control command: the master's ring of
recent lines (pure), read at once and followed live by long poll, with real processes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from conftest import Stereo, ctl, open_stereo, stereo_command

from stereo.control.client import ControlClient
from stereo.control.render import format_log_line, format_logs
from stereo.errors import ControlError
from stereo.logs import LogLine, LogRing

# -- the ring (pure) ------------------------------------------------------------------------------


def ring_of(count: int, lines: int = 1000, size: int = 1 << 20) -> LogRing:
    ring = LogRing(lines, size)
    for n in range(1, count + 1):
        worker = None if n % 3 == 0 else n % 3  # master, worker 1, worker 2, master...
        ring.append(float(n), "info", worker, 100 + n, "stdout", False, f"line {n}".encode())
    return ring


def messages(lines: list[LogLine]) -> list[str]:
    return [line.message.decode() for line in lines]


def test_the_last_lines_then_those_after_a_cursor() -> None:
    ring = ring_of(10)
    tail = ring.read(None, None, 3)
    assert messages(tail.lines) == ["line 8", "line 9", "line 10"]
    assert (tail.next, tail.missed) == (10, 0)
    assert ring.read(10, None, 5).lines == []
    ring.append(11.0, "info", 1, 1, "stdout", False, b"line 11")
    after = ring.read(tail.next, None, 5)
    assert messages(after.lines) == ["line 11"] and after.next == 11


def test_a_limit_cuts_a_batch_and_the_cursor_resumes_where_it_stopped() -> None:
    ring = ring_of(10)
    first = ring.read(2, None, 3)
    assert messages(first.lines) == ["line 3", "line 4", "line 5"] and first.next == 5
    assert messages(ring.read(first.next, None, 3).lines) == ["line 6", "line 7", "line 8"]


def test_ids_choose_workers_and_0_is_the_master() -> None:
    ring = ring_of(9)
    assert messages(ring.read(None, [2], 10).lines) == ["line 2", "line 5", "line 8"]
    assert messages(ring.read(None, [0], 2).lines) == ["line 6", "line 9"]
    # Lines of others move the cursor on: a filtered reader does not see them again.
    assert ring.read(3, [1], 10).next == 9


def test_a_reader_that_fell_behind_is_told_how_many_lines_it_missed() -> None:
    ring = ring_of(25, lines=10)
    got = ring.read(5, None, 100)
    assert got.missed == 10 and messages(got.lines)[0] == "line 16"
    assert ring.read(None, None, 100).missed == 0
    assert ring.read(99, None, 100) == ring.read(25, None, 100)  # another master's cursor


def test_the_ring_is_bounded_in_bytes_too() -> None:
    ring = LogRing(1000, size=100)
    for _ in range(50):
        ring.append(0.0, "info", 1, 1, "stdout", False, b"x" * 30)
    assert len(ring.read(None, None, 1000).lines) == 3  # 90 bytes of messages
    ring.append(0.0, "info", 1, 1, "stdout", False, b"y" * 500)  # one line is always kept
    assert messages(ring.read(None, None, 1000).lines) == ["y" * 500]


def test_rendering_as_the_master_prints_text() -> None:
    master = {"source": "master", "time": "T", "level": "warning", "message": "hi"}
    assert format_log_line(master) == "T WARNING [stereo] hi"
    worker = {"source": "worker", "worker": 2, "pid": 9, "old": True, "message": "bye"}
    assert format_log_line(worker) == "[worker 2 old pid 9] bye"
    assert format_logs({"lines": [], "missed": 0}) == "(no lines)"
    assert format_logs({"lines": [worker], "missed": 4}).splitlines()[0].startswith("(4 lines")


# -- with a real master --------------------------------------------------------------------------


async def stereo_logs(*args: str) -> tuple[int, list[str], str]:
    result = await trio.run_process(
        stereo_command("logs", *args), capture_stdout=True, capture_stderr=True, check=False
    )
    return result.returncode, result.stdout.decode().splitlines(), result.stderr.decode()


async def test_stereo_logs_prints_recent_lines_chosen_by_worker(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(60):
        async with open_stereo("control_app:serve", "-w", "2", "--control", control) as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            await stereo.wait_for(r"^\[stereo\] control socket: ")
            code, lines, err = await stereo_logs("--control", control)
            assert (code, err) == (0, "")
            assert {"[worker 1] ready", "[worker 2] ready"} <= set(lines)
            assert any(line.endswith(f"INFO [stereo] control socket: {control}") for line in lines)

            code, lines, _ = await stereo_logs("2", "--control", control)
            assert (code, lines) == (0, ["[worker 2] ready"])
            code, lines, _ = await stereo_logs("0", "-n", "3", "--json", "--control", control)
            records = [json.loads(line) for line in lines]
            assert len(records) == 3  # "-n 3": the last three lines of the master's own
            assert {(r["source"], r["pid"]) for r in records} == {("master", stereo.pid)}
            assert f"control socket: {control}" in [r["message"] for r in records]

            code, out, _ = await ctl("logs", "1", "--control", control)
            assert (code, out) == (0, "[worker 1] ready\n")
            code, _, err = await ctl("logs", "-n", "0", "--control", control)
            assert (code, err) == (
                1,
                "stereo ctl: logs: the number of lines must be from 1 to 1000\n",
            )
            code, _, err = await ctl("logs", "-f", "--control", control)
            assert code == 2 and "stereo logs -f" in err

            def bad_wait() -> None:
                with (
                    ControlClient.connect(control) as client,
                    pytest.raises(
                        ControlError, match="argument 'wait' must be a number of seconds"
                    ),
                ):
                    client.request("logs", {"after": 0, "wait": "soon"})

            await trio.to_thread.run_sync(bad_wait)


async def test_stereo_logs_follow_shows_new_lines_live_until_the_master_stops(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(90):
        async with open_stereo("control_app:serve", "-w", "2", "--control", control) as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            await stereo.wait_for(r"^\[stereo\] control socket: ")
            process = await trio.lowlevel.open_process(
                stereo_command("logs", "-f", "1", "--control", control),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            follower = Stereo(process)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(follower._collect)
                    await follower.wait_for(r"^\[worker 1\] ready$")  # the recent lines first
                    for value in ("5", "6"):  # each answers a long poll waiting in the master
                        code, _, _ = await ctl("broadcast", value, "--control", control)
                        assert code == 0
                        await follower.wait_for(rf"^\[worker 1\] received {value} from 0$")
                    stereo.signal(signal.SIGTERM)
                    await follower.wait_for(r"^\[worker 1\] stopped gracefully$")
                    assert await process.wait() == 0  # the master went away: the follow ends
                    await follower.eof.wait()
            finally:
                if process.returncode is None:
                    process.kill()
            assert not [line for line in follower.lines if "worker 2" in line]
            assert "stereo logs: the master closed the connection" in follower.lines[-1]
