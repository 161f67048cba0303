"""Start the processes of one benchmark leg and wait on their progress lines.

Each process's merged stdout and stderr is read by a thread into one queue, so the harness waits
for ``@bench EVENT`` lines from any of them under one deadline instead of polling files. On exit a
:class:`Group` stops what is still running, SIGTERM first (stereo's master shuts down gracefully
on it), then SIGKILL to the process group it started, so no worker outlives its leg.

The suite lives in the checkout, not in the installed wheel, so children are told where it is:
``python -m bench...`` children through ``PYTHONPATH`` (:func:`suite_env`), ``stereo run``
through ``--app-dir`` (peers/stereo_peer.py). Children run in the leg's own empty directory,
never in a checkout, where ``python -m stereo.worker`` would import that checkout's ``stereo``
instead of the installed one (which matters when the installation is a ``--baseline``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

MARKER = re.compile(r"@bench (\w+)((?: \w+=\S*)*)")
TERM_GRACE = 10.0
READER_GRACE = 5.0  # s for a reader thread to see EOF once its process group is reaped
# The directory that holds the ``bench`` package: the checkout's root.
ROOT = str(Path(__file__).resolve().parent.parent)


def suite_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the checkout first on ``PYTHONPATH``, for the
    suite's own Python children. Never for a stereo installation: there it would put this
    checkout's ``stereo`` in front of the installed one."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, out.get("PYTHONPATH")) if p)
    return out


def tree_cpu_s(process: psutil.Process) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's scheduler statistics so far (ns): on a CPU, and runnable but waiting for one."""

    on_cpu: int
    waiting: int


def thread_times(pid: int) -> dict[str, ThreadTimes]:
    """Per thread, its scheduler statistics (/proc/PID/task/TID/schedstat); empty where /proc
    has no schedstat (or no such process)."""
    times: dict[str, ThreadTimes] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = stat.read_text().split()
            times[stat.parent.name] = ThreadTimes(int(fields[0]), int(fields[1]))
    return times


def threads_on_cpu_ns(pid: int) -> dict[str, int]:
    """Per thread, the time spent on a CPU so far in ns (:func:`thread_times`).

    Not ``cpu_times()``: that counts in clock ticks (10 ms), so over 10 s it can only say 0.1 %,
    0.2 %..., too coarse for a 0.2 % target, and over a relay leg of half a second it would be
    out by tens of percent. Empty where /proc has no schedstat (or no such process).
    """
    return {tid: times.on_cpu for tid, times in thread_times(pid).items()}


def on_cpu_ns_between(before: dict[str, int], after: dict[str, int]) -> int:
    """CPU time used between two samples by the threads alive at the second one (a thread that
    ended in between takes its last moments with it: trio's idle worker threads exit that way,
    doing next to nothing)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


class LegFailed(Exception):
    """A leg's processes did not report what they should in time; the message holds their tail."""


@dataclass(frozen=True)
class Marker:
    event: str
    fields: dict[str, str]
    read_ns: int  # harness CLOCK_MONOTONIC time when the line was read

    def int(self, key: str) -> int:
        return int(self.fields[key])


class Group:
    def __init__(self, label: str, cwd: str) -> None:
        self.label = label
        self.cwd = cwd  # the leg's own temporary directory (see the module's docstring)
        self.procs: list[subprocess.Popen[str]] = []
        self.exit_codes: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0
        self._backlog: list[Marker] = []
        self._readers: list[threading.Thread] = []
        self.tail: deque[str] = deque(maxlen=40)

    def __enter__(self) -> Group:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            pass_fds=pass_fds,
            cwd=self.cwd,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group, so close() can reap its children
        )
        self.procs.append(proc)
        self._names[proc.pid] = name
        self._open_streams += 1
        reader = threading.Thread(target=self._read, args=(name, proc), daemon=True)
        reader.start()
        self._readers.append(reader)
        return proc

    def _read(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at its end: no pipe left for the garbage collector to warn of
            for line in proc.stdout:
                self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, None))

    def wait(self, event: str, n: int, timeout: float) -> list[Marker]:
        """The first n ``@bench EVENT`` markers (earlier ones of other events are kept)."""
        found = [m for m in self._backlog if m.event == event][:n]
        for m in found:
            self._backlog.remove(m)
        deadline = time.monotonic() + timeout
        while len(found) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"timed out after {timeout:.0f}s waiting for {n} '{event}'")
            try:
                name, line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._open_streams -= 1
                if self._open_streams == 0:
                    raise self._failure(f"every process exited before {n} '{event}'")
                continue
            self.tail.append(f"{name}: {line}")
            match = MARKER.search(line)
            if match is None:
                continue
            fields = dict(kv.split("=", 1) for kv in match.group(2).split())
            marker = Marker(match.group(1), fields, time.monotonic_ns())
            if marker.event == event:
                found.append(marker)
            else:
                self._backlog.append(marker)
        return found

    def _failure(self, what: str) -> LegFailed:
        tail = "\n    ".join(self.tail) or "(no output)"
        return LegFailed(f"{self.label}: {what}; last output:\n    {tail}")

    def wait_exit(self, proc: subprocess.Popen[str], timeout: float) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._failure(f"{self._names[proc.pid]} did not exit in {timeout:.0f}s") from None

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            name = self._names[proc.pid]
            try:
                self.exit_codes[name] = proc.wait(TERM_GRACE)
            except subprocess.TimeoutExpired:
                self.exit_codes[name] = -signal.SIGKILL
            # Reap leftovers (workers of a master that died) in the group this Group created.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for reader in self._readers:  # every holder of the pipes is gone: EOF comes at once
            reader.join(READER_GRACE)
