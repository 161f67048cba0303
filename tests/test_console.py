"""The console in a real pseudo-terminal (pexpect), against a real master.

pexpect is blocking, so these tests are plain functions bounded by pexpect timeouts (or run in a
thread under trio.fail_after when a master from open_stereo is needed). Every wait is for output,
never a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pexpect  # type: ignore[import-untyped]
import psutil
import trio
from conftest import APPS, ctl, open_stereo

# Cursor movements and erasures end a "line" as far as matching goes (the prompt is redrawn
# with them before each line printed above it); every other sequence is dropped.
MOVES = re.compile(r"\x1b\[[0-9;]*[ABDHJK]")
FORWARD = re.compile(r"\x1b\[\d*C")  # skipping blank cells: a space will do
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r|\x07|\x08")
TIMEOUT = 20.0
T = TypeVar("T")


class Terminal:
    """A program in a pty; its output with escape sequences stripped, searched by regex."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = APPS) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "stereo", *args],
            env=env,
            cwd=str(cwd),
            dimensions=(50, 220),
            encoding="utf-8",
            codec_errors="replace",
        )
        self.raw = ""
        self.mark = 0

    @property
    def text(self) -> str:
        return ANSI.sub("", FORWARD.sub(" ", MOVES.sub("\n", self.raw)))

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for ``pattern`` after the mark; move the mark past the match."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            match = regex.search(text, self.mark)
            if match:
                self.mark = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {pattern!r} in:\n{text[self.mark :]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=remaining)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"EOF before {pattern!r}; output:\n{text}") from None

    def expect_all(self, pattern: str, count: int, since: int, timeout: float = TIMEOUT) -> None:
        """Wait until ``count`` lines after position ``since`` match (output printed above the
        prompt may come before or after the command's own answer)."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while len(regex.findall(self.text, since)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not {count} x {pattern!r} in:\n{self.text[since:]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=remaining)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"EOF before {pattern!r}; output:\n{self.text}") from None

    def command(self, line: str) -> int:
        """Send a line at the next prompt; returns the position to look for its effects from."""
        self.expect(r"stereo>")
        since = len(self.text)
        self.child.send(line + "\r")
        return since

    def worker_pids(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.child.pid).children()}

    def close(self) -> None:
        if self.child.isalive():
            for proc in psutil.Process(self.child.pid).children():
                proc.kill()
            self.child.kill(signal.SIGKILL)
        self.child.close(force=True)


def console_env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )


def status_pids(term: Terminal, count: int) -> dict[int, int]:
    """Run `status` and read slot -> pid from its table."""
    term.command("status")
    term.expect(r"SLOT +PID +STATE")
    rows = [term.expect(r"^ *(\d+) +(\d+) +(ready|starting|draining)") for _ in range(count)]
    return {int(m[1]): int(m[2]) for m in rows}


def await_in_thread(call: Coroutine[Any, Any, T]) -> T:
    """Run ``call`` on the trio loop this test thread came from (the console tests block)."""
    return trio.from_thread.run(lambda: call)


def wait_gone(pids: set[int], timeout: float = TIMEOUT) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).wait(timeout)
        except psutil.NoSuchProcess:
            pass


def test_console_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    term = Terminal(
        ["run", "control_app:serve", "-w", "2", "--control", path], console_env(tmp_path)
    )
    try:
        term.expect(r"`help` lists the commands")
        term.expect(r"^\[worker [12]\] ready")
        term.expect(r"^\[worker [12]\] ready")
        # Wait until both are READY as the master sees it (the app prints a moment earlier).
        while True:
            mark = term.mark
            pids = status_pids(term, 2)
            if "starting" not in term.text[mark:]:
                break
        assert set(pids) == {1, 2}
        assert set(pids.values()) == term.worker_pids()

        since = term.command("add 2")
        term.expect(r"^added workers 3, 4$")
        term.expect_all(r"^\[worker [34]\] ready$", 2, since)
        while True:
            mark = term.mark
            pids = status_pids(term, 4)
            if "starting" not in term.text[mark:]:
                break
        assert sorted(pids) == [1, 2, 3, 4]
        assert set(pids.values()) == term.worker_pids()

        since = term.command("remove 4")
        term.expect(r"^removing 4 \(draining gracefully\)$")
        term.expect_all(r"^\[worker 4\] stopped gracefully$", 1, since)
        wait_gone({pids[4]})
        del pids[4]
        assert status_pids(term, 3) == pids

        # Tab completes the argument: "restart al<Tab>" becomes "restart all".
        term.expect(r"stereo>")
        term.child.send("restart al\t")
        term.expect(r"restart all|^ *l *$")  # the line is redrawn, or just the missing "l"
        term.child.send("\r")
        term.expect(r"^restarted 1, 2, 3$", timeout=60)
        wait_gone(set(pids.values()))
        new = status_pids(term, 3)
        assert sorted(new) == [1, 2, 3]
        assert not set(new.values()) & set(pids.values())
        assert set(new.values()) == term.worker_pids()

        since = term.command('broadcast {"hello": ["world", 1]}')
        term.expect(r"^broadcast seq 1 to 3 workers$")
        term.expect_all(r'^\[worker [123]\] received \{"hello": \["world", 1\]\} from 0$', 3, since)

        # Mistakes get one readable line each.
        term.command("frobnicate")
        term.expect(r"^unknown command 'frobnicate'; type `help` for the list$")
        term.command("inspect 9")
        term.expect(r"^error: there is no worker 9 \(workers: 1-3\)$")
        term.command("broadcast {oops")
        term.expect(r"^broadcast: '\{oops' is not JSON")
        term.command("help kill")
        term.expect(r"^kill ID \[SIGNAL\]$")
        term.command("logs -n 1 0")
        term.expect(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO \[stereo\] ")
        term.command("logs -f")
        term.expect(r"^worker output is shown here live already")

        term.command("quit")
        term.expect(r"console detached; the master keeps running")
        # Detached: the master and its workers run on, and their output still reaches us.
        assert term.child.isalive()
        assert term.worker_pids() == set(new.values())
        client = pexpect.run(
            f"{sys.executable} -m stereo ctl --control {path} broadcast 7",
            timeout=TIMEOUT,
            withexitstatus=True,
        )
        assert client[1] == 0
        term.expect_all(r"^\[worker [123]\] received 7 from 0$", 3, term.mark)

        history = (tmp_path / "state" / "stereo" / "console_history").read_text()
        assert "+add 2" in history and "+restart all" in history

        term.child.kill(signal.SIGTERM)
        term.expect(r"all workers stopped; bye")
        term.child.expect(pexpect.EOF, timeout=TIMEOUT)
        term.child.close()
        assert term.child.exitstatus == 0
        assert "Traceback" not in term.text
    finally:
        term.close()


def test_ctrl_d_detaches_and_shutdown_stops(tmp_path: Path) -> None:
    """Ctrl-D detaches like quit; from a second console, `shutdown` stops the master."""
    path = str(tmp_path / "ctl.sock")
    env = console_env(tmp_path)
    master = Terminal(["run", "control_app:serve", "-w", "1", "--control", path], env)
    try:
        master.expect(r"^\[worker 1\] ready")
        master.expect(r"stereo>")
        master.child.sendcontrol("d")
        master.expect(r"console detached; the master keeps running")

        remote = Terminal(["console", "--control", path], env)
        try:
            remote.expect(r"connected to .*: 1 worker processes")
            remote.command("stats")
            remote.expect(r"^broadcasts +0 ")
            remote.command("shutdown quick")
            remote.expect(r"^master is stopping now$")
            remote.expect(r"console ended|detached", timeout=TIMEOUT)
        finally:
            remote.close()
        master.expect(r"all workers stopped; bye")
        master.child.expect(pexpect.EOF, timeout=TIMEOUT)
    finally:
        master.close()


async def test_remote_console_and_top(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    env = console_env(tmp_path)
    with trio.fail_after(60):
        async with open_stereo("control_app:serve", "-w", "2", "--control", path) as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            pids = {child.pid for child in stereo.children()}

            def console() -> None:
                term = Terminal(["console", "--control", path], env)
                try:
                    term.expect(r"connected to .*ctl.sock: 2 worker processes")
                    term.expect(r"stereo>")
                    term.child.send("statu\t")  # completes to "status"
                    term.expect(r"status|^ *s *$")  # redrawn, or just the missing "s"
                    term.child.send("\r")
                    term.expect(r"SLOT +PID")
                    found = {int(term.expect(r"^ *[12] +(\d+) ")[1]) for _ in range(2)}
                    assert found == pids
                    term.command("logs 1")
                    term.expect(r"^\[worker 1\] ready$")
                    # Following: new lines of worker 2 above the prompt, until toggled off.
                    term.command("logs -f 2")
                    term.expect(r"^following the log above the prompt")
                    term.expect(r"^\[worker 2\] ready$")  # its recent lines first
                    code, _, _ = await_in_thread(ctl("broadcast", "3", "--control", path))
                    assert code == 0
                    term.expect(r"^\[worker 2\] received 3 from 0$")
                    term.command("logs -f")
                    term.expect(r"^stopped following the log$")
                    since = term.command("top")
                    # Full-screen redraws skip cells that did not change: match words, not lines.
                    term.expect(r"master pid \d+, up [\d.]+s, 2 workers")
                    for pid in pids:
                        term.expect_all(rf" {pid} ", 1, since)
                    term.expect(r"\(q to leave\)")
                    term.child.send("q")
                    term.command("quit")
                    term.expect(r"^detached; the master keeps running$")
                    term.child.expect(pexpect.EOF, timeout=TIMEOUT)
                    term.child.close()
                    assert term.child.exitstatus == 0
                finally:
                    term.close()

            await trio.to_thread.run_sync(console)
            assert stereo.process.returncode is None
            assert {child.pid for child in stereo.children()} == pids


def test_in_place_with_a_log_file_follows_the_log_on_demand(tmp_path: Path) -> None:
    """With --log-file the terminal shows only the console; `logs -f` brings the output back."""
    path = str(tmp_path / "ctl.sock")
    log = tmp_path / "stereo.log"
    args = ["run", "control_app:serve", "-w", "1", "--control", path, "--log-file", str(log)]
    term = Terminal(args, console_env(tmp_path))
    try:
        term.expect(r"`help` lists the commands")
        term.command("logs -f 1")
        term.expect(r"^following the log above the prompt")
        term.expect(r"^\[worker 1\] ready$")  # from the ring, through the control socket
        client = pexpect.run(
            f"{sys.executable} -m stereo ctl --control {path} broadcast 4",
            timeout=TIMEOUT,
            withexitstatus=True,
        )
        assert client[1] == 0
        term.expect(r"^\[worker 1\] received 4 from 0$")
        term.command("logs -f")
        term.expect(r"^stopped following the log$")
        term.child.kill(signal.SIGTERM)
        term.child.expect(pexpect.EOF, timeout=TIMEOUT)
        term.child.close()
        assert term.child.exitstatus == 0
        assert "[stereo]" not in term.text  # the master's own lines went to the file only
        logged = log.read_text()
        assert "[worker 1] received 4 from 0" in logged and "[stereo] all workers stopped" in logged
    finally:
        term.close()
