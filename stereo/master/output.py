"""Worker output: split each worker's stdout/stderr into lines and print them with its name.

The master always drains the workers' pipes: a worker blocked in ``print()`` misses its
heartbeats and gets killed. Lines wait in an :class:`OutputBuffer` for the one task that writes
them, through a thread, so a slow terminal or a stuck pipe on the master's stdout (a paused
pager, Ctrl-S, a stalled log shipper) never slows the workers or the relay. When the buffer is
full, worker lines are dropped, counted per worker and announced where they are missing; the
master's own lines have a budget of their own, so worker output never pushes them out.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import trio

MAX_LINE = 64 * 1024  # a longer "line" is cut into pieces rather than buffered without bound
WORKER_BUFFER = 4 * 1024 * 1024  # bytes of worker output waiting for (or being written to) stdout
LOG_BUFFER = 256 * 1024  # the master's own lines, a budget of their own: ~2,500 lines
WRITE_CHUNK = 256 * 1024  # at most this much per write, so room frees up as stdout drains


class LineSplitter:
    """Bytes in, complete lines out (pure)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        data = self._partial + bytes(data)
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return lines

    def flush(self) -> list[bytes]:
        rest, self._partial = self._partial, b""
        return [rest] if rest else []


Writer = Callable[[bytes], None]


def _stdout_writer(data: bytes) -> None:
    fd = sys.stdout.fileno()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass(frozen=True)
class OutputStatistics:
    buffered: int  # bytes waiting for stdout or being written
    worker_lines_dropped: Mapping[int, int]  # per worker id, since the master started
    log_lines_dropped: int  # the master's own


class _Lane:
    """One budget of the buffer: the bytes it holds (queued or being written), its limit, and
    the lines dropped, by source, since its last marker (``gap``) and ever (``total``)."""

    def __init__(self, limit: int, marker: Callable[[Counter[int]], bytes]) -> None:
        self.limit = limit
        self.marker = marker
        self.held = 0
        self.gap: Counter[int] = Counter()
        self.total: Counter[int] = Counter()


@dataclass(frozen=True)
class Batch:
    """Bytes to write in one go, and what writing them gives back to each lane."""

    data: bytes
    released: tuple[tuple[_Lane, int], ...]


def _worker_marker(gap: Counter[int]) -> bytes:
    per_worker = ", ".join(f"worker {worker}: {lines}" for worker, lines in sorted(gap.items()))
    return (
        f"[stereo] {gap.total()} lines of worker output dropped (stdout not keeping up):"
        f" {per_worker}\n"
    ).encode()


def _log_marker(gap: Counter[int]) -> bytes:
    return (
        f"[stereo] {gap.total()} lines of the master's own output dropped (stdout not keeping up)\n"
    ).encode()


class OutputBuffer:
    """Output waiting for stdout, in order, in two budgets (pure): worker lines and the master's
    own. Adding never waits; an entry over its lane's limit is dropped and counted. Once a lane
    dropped something, it takes nothing more until it is back under half its limit (so a slow
    stdout gives a few long gaps, not one every few lines); then a marker saying how many lines
    are missing goes where they are missing. Markers count in their lane but are never dropped.
    """

    def __init__(self, limit: int = WORKER_BUFFER, log_limit: int = LOG_BUFFER) -> None:
        self._workers = _Lane(limit, _worker_marker)
        self._log = _Lane(log_limit, _log_marker)
        self._queue: deque[tuple[_Lane, bytes]] = deque()

    def add_worker_lines(self, worker_id: int, data: bytes, lines: int) -> bool:
        """``lines`` prefixed lines of worker ``worker_id`` in ``data``; False if dropped."""
        return self._add(self._workers, worker_id, data, lines)

    def add_log(self, data: bytes) -> bool:
        return self._add(self._log, 0, data, 1)

    @property
    def queued(self) -> bool:
        """Whether there is something to take."""
        return bool(self._queue)

    @property
    def held(self) -> int:
        """Bytes not written yet: queued, or taken and not released."""
        return self._workers.held + self._log.held

    def take(self, limit: int = WRITE_CHUNK) -> Batch:
        """The oldest entries, up to ``limit`` bytes (at least one). Their bytes stay held until
        :meth:`release`, so what is being written counts against the limits too."""
        parts: list[bytes] = []
        released = {self._workers: 0, self._log: 0}
        size = 0
        while self._queue and (not parts or size + len(self._queue[0][1]) <= limit):
            lane, data = self._queue.popleft()
            parts.append(data)
            released[lane] += len(data)
            size += len(data)
        return Batch(b"".join(parts), tuple(released.items()))

    def release(self, batch: Batch) -> None:
        """``batch`` was written (or could not be): its room is free again."""
        for lane, size in batch.released:
            lane.held -= size
            self._reopen(lane)

    def statistics(self) -> OutputStatistics:
        return OutputStatistics(self.held, dict(self._workers.total), self._log.total.total())

    def _add(self, lane: _Lane, source: int, data: bytes, lines: int) -> bool:
        self._reopen(lane)
        if lane.gap or lane.held + len(data) > lane.limit:
            lane.gap[source] += lines
            lane.total[source] += lines
            self._reopen(lane)  # an entry bigger than half the lane: nothing else will
            return False
        self._append(lane, data)
        return True

    def _reopen(self, lane: _Lane) -> None:
        if lane.gap and lane.held <= lane.limit // 2:
            self._append(lane, lane.marker(lane.gap))
            lane.gap = Counter()

    def _append(self, lane: _Lane, data: bytes) -> None:
        lane.held += len(data)
        self._queue.append((lane, data))


class OutputSink:
    """Worker lines and the master's own, written in order by one task (:meth:`run`) through a
    thread. Adding never waits: see :class:`OutputBuffer` for what happens when stdout lags."""

    def __init__(
        self,
        writer: Writer | None = None,
        *,
        limit: int = WORKER_BUFFER,
        log_limit: int = LOG_BUFFER,
    ) -> None:
        self.writer = writer or _stdout_writer
        self.buffer = OutputBuffer(limit, log_limit)
        self._wake = trio.Event()
        self._drained = trio.Event()

    @contextlib.contextmanager
    def redirect(self, writer: Writer) -> Iterator[None]:
        """Write through ``writer`` instead, until the context ends (the in-place console puts
        output above its prompt). Only from the trio side, where the output task reads it."""
        previous, self.writer = self.writer, writer
        try:
            yield
        finally:
            self.writer = previous

    def log(self, line: str) -> None:
        """A line of the master's own, e.g. '[stereo] worker 3 exited'. Never blocks, and worker
        output never takes its place."""
        self.buffer.add_log(f"[stereo] {line}\n".encode())
        self._wake.set()

    def add_worker_lines(self, worker_id: int, data: bytes, lines: int) -> None:
        """Never blocks: a worker must not wait for the master's stdout."""
        self.buffer.add_worker_lines(worker_id, data, lines)
        self._wake.set()

    def statistics(self) -> OutputStatistics:
        return self.buffer.statistics()

    async def flush(self) -> None:
        """Wait until everything added so far has been written."""
        while self.buffer.held:
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        while True:
            if not self.buffer.queued:
                self._drained.set()  # nothing queued here means nothing held either
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = self.buffer.take()
            try:
                # abandon_on_cancel: a write blocked on a stuck stdout must not keep the master
                # from exiting.
                await trio.to_thread.run_sync(self.writer, batch.data, abandon_on_cancel=True)
            except OSError:
                pass  # stdout is gone (closed terminal); workers keep running
            self.buffer.release(batch)


async def pump_lines(stream: trio.abc.ReceiveStream, worker_id: int, sink: OutputSink) -> None:
    """Read a worker's pipe to its end, whatever happens to the lines (see OutputSink)."""
    prefix = f"[worker {worker_id}] ".encode()
    splitter = LineSplitter()
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            lines = splitter.feed(data) if data else splitter.flush()
            if lines:
                joined = b"".join(prefix + line + b"\n" for line in lines)
                sink.add_worker_lines(worker_id, joined, len(lines))
            if not data:
                return
