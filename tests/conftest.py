"""Shared fixtures: start the real ``stereo run`` as a user would, and read what it prints.

Everything waits on events (a new output line, EOF, a process exit) under ``trio.fail_after``;
nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest
import trio

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parent.parent
LISTENING = re.compile(
    r"^\[stereo\] listening on (?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\s]+)):(?P<port>\d+)$"
)

# The master's own lines start with a time and a level (docs/logging.md); tests match what
# follows, as the lines read before that prefix existed.
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ (?=\[stereo\] )")


class Stereo:
    """A running ``stereo run`` master, its output collected line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []  # the master's own without their time and level
        self.raw_lines: list[str] = []  # as printed
        self._changed = trio.Event()
        self.eof = trio.Event()
        self._reading = trio.Event()
        self._reading.set()

    def pause_reading(self) -> None:
        """Stop reading the master's stdout after the chunk being read (its pipe then fills)."""
        self._reading = trio.Event()

    def resume_reading(self) -> None:
        self._reading.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _collect(self, pipe: trio.abc.ReceiveStream | None = None) -> None:
        """Read the master's stdout (or ``pipe``, e.g. its stderr) to its end."""
        pipe = pipe or self.process.stdout
        assert pipe is not None
        partial = b""
        while True:
            await self._reading.wait()
            chunk = await pipe.receive_some()
            if not chunk:
                break
            partial += chunk
            *complete, partial = partial.split(b"\n")
            if complete:
                raw = [line.decode(errors="replace") for line in complete]
                self.raw_lines.extend(raw)
                self.lines.extend(LOG_PREFIX.sub("", line) for line in raw)
                self._changed.set()
                self._changed = trio.Event()
        if partial:
            self.raw_lines.append(partial.decode(errors="replace"))
            self.lines.append(LOG_PREFIX.sub("", self.raw_lines[-1]))
        self.eof.set()
        self._changed.set()

    async def wait_for(self, pattern: str, count: int = 1, start: int = 0) -> list[re.Match[str]]:
        """Wait until ``count`` lines from index ``start`` on match ``pattern`` (re.search)."""
        regex = re.compile(pattern)
        while True:
            found = [m for line in self.lines[start:] if (m := regex.search(line))]
            if len(found) >= count:
                return found[:count]
            if self.eof.is_set():
                raise AssertionError(
                    f"stereo exited before {count} lines matched {pattern!r}; output:\n"
                    + "\n".join(self.lines[-60:])
                )
            await self._changed.wait()

    async def address(self) -> tuple[str, int]:
        match = (await self.wait_for(LISTENING.pattern))[0]
        return (match["v6"] or match["host"], int(match["port"]))

    def worker_lines(self, worker_id: int) -> list[str]:
        prefix = f"[worker {worker_id}] "
        return [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signal.Signals(signum))

    async def wait(self) -> int:
        code = await self.process.wait()
        await self.eof.wait()
        return code

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def live_children(self) -> list[int]:
        """Pids of the master's descendants that have not exited (zombies and the ones that
        vanish while we look are left out)."""
        pids = []
        for child in self.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids


class Output:
    """The master's output, with an event per write (the sink calls us in a worker thread)."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = trio.Event()

    def write(self, data: bytes) -> None:
        trio.from_thread.run_sync(self._add, data.decode())

    def _add(self, text: str) -> None:
        self.text += text
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pattern: str, count: int = 1) -> None:
        while len(re.findall(pattern, self.text, re.M)) < count:
            await self._changed.wait()


def stereo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stereo", *args]


async def ctl(*args: str) -> tuple[int, str, str]:
    """Run ``stereo ctl ARGS``; its exit status, stdout and stderr."""
    result = await trio.run_process(
        stereo_command("ctl", *args),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd="/",
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@asynccontextmanager
async def open_stereo(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = APPS,
    prefix: tuple[str, ...] = (),
    python: str = sys.executable,
) -> AsyncIterator[Stereo]:
    """Start ``stereo run ARGS`` (stdout and stderr merged); kill whatever is left at the end.
    ``prefix`` runs it under a command that execs it, e.g. ``ip netns exec NS``, so that the
    pid is still the master's. ``python``: the interpreter (one another user may run, for
    --user)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    process = await trio.lowlevel.open_process(
        [*prefix, python, "-m", "stereo", "run", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    stereo = Stereo(process)
    leftovers: list[psutil.Process] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stereo._collect)
            try:
                yield stereo
            finally:
                # Shown by pytest only when the test fails.
                print("---- stereo output ----", *stereo.lines[-120:], sep="\n")
                leftovers = stereo.children()
                if process.returncode is None:
                    process.kill()
                # Shielded: a test that failed by its own deadline is cancelled here, and an
                # unreaped master would warn (ResourceWarning) in whichever test ran next.
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await process.wait()
                for child in leftovers:
                    try:
                        child.kill()
                    except psutil.NoSuchProcess:
                        pass
                nursery.cancel_scope.cancel()
    finally:
        if process.stdout is not None:
            with trio.CancelScope(shield=True):
                await process.stdout.aclose()


async def wait_exited(pid: int) -> None:
    """Return once process ``pid`` has exited (pidfd readiness: an event, not polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def wait_all_exited(pids: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        for pid in pids:
            nursery.start_soon(wait_exited, pid)


@pytest.fixture
def apps_dir() -> Path:
    return APPS


@pytest.fixture(params=["python", "c"])
def relay_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test's master on each data plane (STEREO_RELAY; docs/architecture.md)."""
    from stereo.master.cplane import available

    if request.param == "c" and not available():
        pytest.skip("the C relay is not built")
    monkeypatch.setenv("STEREO_RELAY", request.param)
    return str(request.param)
