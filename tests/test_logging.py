"""Logging (docs/logging.md) with real `stereo run` processes: worker stderr on the master's
stderr, time and level on the master's lines, --log-level, --log-format json, --log-file and its
reopening on SIGUSR1, and the mark on the lines of a process being replaced."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
import trio
from conftest import APPS, Stereo, ctl, stereo_command

from stereo.errors import ConfigError
from stereo.logs import (
    JsonFormatter,
    TextFormatter,
    iso_time,
    json_line,
    json_lines,
    worker_prefix,
)
from stereo.master.logfile import LogFile
from stereo.master.output import open_output

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@asynccontextmanager
async def open_apart(*args: str) -> AsyncIterator[tuple[Stereo, Stereo]]:
    """``stereo run ARGS`` with its stdout and its stderr read apart."""
    process = await trio.lowlevel.open_process(
        stereo_command("run", *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        cwd=APPS,
        start_new_session=True,
    )
    out, err = Stereo(process), Stereo(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out._collect)
            nursery.start_soon(err._collect, process.stderr)
            try:
                yield out, err
            finally:
                print("---- stdout ----", *out.raw_lines[-60:], "---- stderr ----", sep="\n")
                print(*err.raw_lines[-60:], sep="\n")
                for child in out.children():
                    child.kill()
                if process.returncode is None:
                    process.kill()
                with trio.move_on_after(10):
                    await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


# -- formats (pure) -------------------------------------------------------------------------------


def test_text_and_json_formats() -> None:
    assert iso_time(0.25) == "1970-01-01T00:00:00.250Z"
    assert worker_prefix(3, 4242, False) == b"[worker 3] "
    assert worker_prefix(3, 4242, True) == b"[worker 3 old pid 4242] "
    assert worker_prefix(5, 4242, False, "pdf") == b"[pool pdf 5] "
    assert worker_prefix(5, 4242, True, "pdf") == b"[pool pdf 5 old pid 4242] "
    pooled = json.loads(json_line(1.5, "info", "worker", 5, 7, "stdout", False, "hi", "pdf"))
    assert (pooled["source"], pooled["worker"], pooled["pool"], pooled["message"]) == (
        "pool",
        5,
        "pdf",
        "hi",
    )
    assert list(pooled)[-1] == "message"
    chunk = json_lines(1.5, 5, 7, "stdout", False, [b"hi"], "pdf").decode()
    assert json.loads(chunk) == pooled
    record = json.loads(json_line(1.5, "info", "worker", 2, 7, "stderr", True, "héllo"))
    assert record == {
        "time": "1970-01-01T00:00:01.500Z",
        "level": "info",
        "source": "worker",
        "worker": 2,
        "pid": 7,
        "stream": "stderr",
        "old": True,
        "message": "héllo",
    }
    # A chunk of worker lines, encoded together, gives the same objects line by line.
    chunk = json_lines(1.5, 2, 7, "stderr", True, [b'h\xc3\xa9llo "q"', b"\xff"]).decode()
    assert [json.loads(text) for text in chunk.splitlines()] == [
        json.loads(json_line(1.5, "info", "worker", 2, 7, "stderr", True, message))
        for message in ('héllo "q"', "\ufffd")
    ]

    entry = logging.LogRecord("stereo.master", logging.WARNING, __file__, 1, "x %s", ("y",), None)
    entry.created = 2.0
    assert TextFormatter().format(entry) == "1970-01-01T00:00:02.000Z WARNING [stereo] x y"
    shipped = json.loads(JsonFormatter().format(entry))
    assert (shipped["source"], shipped["level"], shipped["worker"]) == ("master", "warning", None)
    assert shipped["message"] == "x y" and shipped["pid"] == os.getpid()


# -- end to end ------------------------------------------------------------------------------------


async def test_worker_stderr_stays_on_stderr_and_the_masters_lines_carry_time_and_level(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(60):
        async with open_apart("streams:serve", "-w", "1", "--control", control) as (out, err):
            await out.wait_for(r"^\[worker 1\] ready pid=")
            await err.wait_for(r"^\[worker 1\] to stderr pid=")
            await out.wait_for(r"^\[stereo\] control socket: ")
            code, _, _ = await ctl("broadcast", "7", "--control", control)
            assert code == 0
            await out.wait_for(r"^\[worker 1\] out 7$")
            await err.wait_for(r"^\[worker 1\] err 7$")
            assert not [line for line in out.lines if "err 7" in line or "to stderr" in line]
            assert not [line for line in err.lines if "out 7" in line or "ready" in line]
            # The master's own lines: ISO 8601 UTC time, level, then the line as it was.
            stamped = [line for line in out.raw_lines if "[stereo] control socket: " in line]
            match = re.match(rf"^({STAMP}) INFO \[stereo\] control socket: ", stamped[0])
            assert match, stamped
            when = datetime.fromisoformat(match[1].replace("Z", "+00:00")).timestamp()
            assert abs(when - time.time()) < 120
            out.signal(signal.SIGTERM)
            assert await out.wait() == 0


async def test_log_level_warning_keeps_only_warnings_and_up(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    args = ("control_app:serve", "-w", "1", "--control", control, "--log-level", "warning")
    with trio.fail_after(60):
        async with open_apart(*args) as (out, _err):
            await out.wait_for(r"^\[worker 1\] ready$")
            out.signal(signal.SIGUSR1)  # a warning: there is no --log-file to reopen
            await out.wait_for(r"^\[stereo\] SIGUSR1: no --log-file to reopen$")
            # A worker killed from outside: its exit is a warning, kept at this level.
            [worker] = out.children()
            worker.kill()
            await out.wait_for(rf"^\[stereo\] worker 1 \(pid {worker.pid}\) exited: killed by")
            master = [line for line in out.raw_lines if "[stereo]" in line]
            # The info lines (control socket, worker ready...) were left out; worker output never
            # is; the warnings are all there.
            assert len(master) == 2
            assert all(re.match(rf"^{STAMP} WARNING \[stereo\] ", line) for line in master)


async def test_json_lines_for_log_shippers(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    args = ("streams:serve", "-w", "1", "--control", control, "--log-format", "json")
    with trio.fail_after(60):
        async with open_apart(*args) as (out, err):
            ready = await out.wait_for(r'"message":"ready pid=(\d+)"')
            await err.wait_for(r'"message":"to stderr pid=')
            await out.wait_for(r'"message":"control socket: ')
            records = [json.loads(line) for line in out.raw_lines]  # every line is one object
            worker = next(r for r in records if r["message"].startswith("ready"))
            assert worker["pid"] == int(ready[0][1])
            assert (worker["source"], worker["worker"], worker["stream"]) == ("worker", 1, "stdout")
            assert (worker["level"], worker["old"]) == ("info", False)
            master = next(r for r in records if r["message"].startswith("control socket"))
            assert (master["source"], master["worker"], master["level"]) == ("master", None, "info")
            assert master["pid"] == out.pid and master["stream"] is None
            assert re.fullmatch(STAMP, master["time"])
            [stderr] = [json.loads(line) for line in err.raw_lines]
            assert (stderr["stream"], stderr["worker"]) == ("stderr", 1)


def open_fifo(path: Path) -> tuple[trio.lowlevel.FdStream, int]:
    """A named pipe at ``path`` to read the log from as it is written (an event per line, not a
    file to poll), and a write end of our own, so that it shows no EOF before the master opens
    it (close it to see the end)."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    return trio.lowlevel.FdStream(reader), os.open(path, os.O_WRONLY | os.O_NONBLOCK)


async def test_log_file_gets_everything_and_is_reopened_on_sigusr1(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    log = tmp_path / "stereo.log"
    first, first_writer = open_fifo(log)
    args = ("streams:serve", "-w", "1", "--control", control, "--log-file", str(log))
    with trio.fail_after(60):
        async with open_apart(*args) as (out, err), trio.open_nursery() as nursery:
            old, new = Stereo(out.process), Stereo(out.process)
            nursery.start_soon(old._collect, first)
            await old.wait_for(r"^\[worker 1\] to stderr pid=")
            await old.wait_for(r"^\[worker 1\] ready pid=")  # its stdout is pumped apart
            await old.wait_for(r"^\[stereo\] worker 1 \(pid \d+\) ready$")  # and the master's
            await old.wait_for(r"^\[stereo\] control socket: ")
            log.rename(tmp_path / "stereo.log.1")  # what logrotate does
            second, second_writer = open_fifo(log)
            nursery.start_soon(new._collect, second)
            out.signal(signal.SIGUSR1)
            await new.wait_for(rf"^\[stereo\] SIGUSR1: reopened {re.escape(str(log))}$")
            code, _, _ = await ctl("broadcast", "8", "--control", control)
            assert code == 0
            await new.wait_for(r"^\[worker 1\] out 8$")
            await new.wait_for(r"^\[worker 1\] err 8$")
            out.signal(signal.SIGTERM)
            assert await out.wait() == 0
            await new.wait_for(r"^\[stereo\] all workers stopped; bye$")
            await err.eof.wait()
            assert out.raw_lines == [] and err.raw_lines == []  # nothing on the terminal
            os.close(first_writer)
            os.close(second_writer)
            await old.eof.wait()
            await new.eof.wait()
    # The new file's first line of the master's own is the note of the reopening.
    masters = [line for line in new.raw_lines if re.match(rf"^{STAMP} \w+ \[stereo\] ", line)]
    assert re.match(rf"^{STAMP} INFO \[stereo\] SIGUSR1: reopened ", masters[0])
    assert not [line for line in old.lines if "reopened" in line or line.endswith(" 8")]


def test_a_log_file_is_appended_to_and_reopened_at_its_path(tmp_path: Path) -> None:
    path = tmp_path / "stereo.log"
    path.write_bytes(b"from before\n")
    file = LogFile(str(path))
    try:
        file.write(b"one\n")
        path.rename(tmp_path / "stereo.log.1")
        file.write(b"two\n")  # still the old file, until reopened
        file.reopen()
        file.write(b"three\n")
    finally:
        file.close()
    assert (tmp_path / "stereo.log.1").read_bytes() == b"from before\none\ntwo\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_bytes() == b"three\n" and path.stat().st_mode & 0o777 == 0o640 & ~umask


def test_a_log_file_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--log-file .*/nodir/x\.log: cannot open it: No such"):
        open_output(str(tmp_path / "nodir" / "x.log"))


async def test_a_replaced_process_is_told_apart_from_its_successor(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    with trio.fail_after(90):
        async with open_apart("control_app:serve", "-w", "1", "--control", control) as (out, _):
            await out.wait_for(r"^\[worker 1\] ready$")
            code, status, _ = await ctl("status", "--json", "--control", control)
            assert code == 0
            [row] = json.loads(status)
            code, _, _ = await ctl("restart", "1", "--control", control)
            assert code == 0
            # The old process drains after its replacement is ready: its lines say so.
            await out.wait_for(rf"^\[worker 1 old pid {row['pid']}\] stopped gracefully$")
            await out.wait_for(r"^\[worker 1\] ready$", count=2)
            assert "[worker 1] stopped gracefully" not in out.lines
