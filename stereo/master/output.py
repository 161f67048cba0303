"""Worker output and the master's log: split each worker's stdout/stderr into lines and print
them with its name (stdout on stdout, stderr on stderr, or all of it in --log-file), and the
master's own lines, from the stdlib logger of :class:`OutputSink` (docs/logging.md).

The master always drains the workers' pipes: a worker blocked in ``print()`` misses its
heartbeats and gets killed. Lines wait in an :class:`OutputBuffer` for the one task that writes
them, through a thread, so a slow terminal or a stuck pipe on the master's stdout (a paused
pager, Ctrl-S, a stalled log shipper) never slows the workers or the relay. When the buffer is
full, worker lines are dropped, counted per worker and announced where they are missing; the
master's own lines have a budget of their own, so worker output never pushes them out.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import trio

from ..errors import ConfigError
from ..logs import LogRing, LogSlice, formatter, json_lines, worker_prefix
from .logfile import LogFile, write_all

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
STDOUT = "stdout"
STDERR = "stderr"


def _stdout_writer(data: bytes) -> None:
    write_all(sys.stdout.fileno(), data)


def _stderr_writer(data: bytes) -> None:
    write_all(sys.stderr.fileno(), data)


@dataclass(frozen=True)
class WorkerSource:
    """Whose pipe a pump reads: slot ``worker``, process ``pid``, its ``stream``; ``old()``
    says whether a newer process of the same slot has started (a restart is under way)."""

    worker: int
    pid: int
    stream: str = STDOUT
    old: Callable[[], bool] = lambda: False
    pool: str | None = None  # a pool process's: its pool, named in its lines


@dataclass(frozen=True)
class OutputStatistics:
    buffered: int  # bytes waiting for stdout or being written
    worker_lines_dropped: Mapping[int, int]  # per worker id, since the master started
    log_lines_dropped: int  # the master's own


#: How a note of the master's own looks, given its text (the sink's log format decides).
Note = Callable[[str], bytes]


def _plain_note(text: str) -> bytes:
    return f"[stereo] {text}\n".encode()


class _Lane:
    """One budget of the buffer: the bytes it holds (queued or being written), its limit, and
    the lines dropped, by source, since its last marker (``gap``) and ever (``total``)."""

    def __init__(self, limit: int, marker: Callable[[Counter[int]], str]) -> None:
        self.limit = limit
        self.marker = marker
        self.held = 0
        self.gap: Counter[int] = Counter()
        self.total: Counter[int] = Counter()


@dataclass(frozen=True)
class Batch:
    """Bytes for one stream, to write in one go, and what writing them gives back to each lane."""

    stream: str
    data: bytes
    released: tuple[tuple[_Lane, int], ...]


def _worker_marker(gap: Counter[int]) -> str:
    per_worker = ", ".join(f"worker {worker}: {lines}" for worker, lines in sorted(gap.items()))
    return f"{gap.total()} lines of worker output dropped (stdout not keeping up): {per_worker}"


def _log_marker(gap: Counter[int]) -> str:
    return f"{gap.total()} lines of the master's own output dropped (stdout not keeping up)"


class OutputBuffer:
    """Output waiting for stdout and stderr, in order, in two budgets (pure): worker lines and
    the master's own. Adding never waits; an entry over its lane's limit is dropped and counted.
    Once a lane dropped something, it takes nothing more until it is back under half its limit
    (so a slow stdout gives a few long gaps, not one every few lines); then a marker saying how
    many lines are missing goes where they are missing (on stdout, as a ``note``). Markers count
    in their lane but are never dropped.
    """

    def __init__(
        self, limit: int = WORKER_BUFFER, log_limit: int = LOG_BUFFER, note: Note = _plain_note
    ) -> None:
        self._workers = _Lane(limit, _worker_marker)
        self._log = _Lane(log_limit, _log_marker)
        self._note = note
        self._queue: deque[tuple[_Lane, str, bytes]] = deque()

    def add_worker_lines(
        self, worker_id: int, data: bytes, lines: int, stream: str = STDOUT
    ) -> bool:
        """``lines`` formatted lines of worker ``worker_id`` in ``data``; False if dropped."""
        return self._add(self._workers, worker_id, data, lines, stream)

    def add_log(self, data: bytes) -> bool:
        return self._add(self._log, 0, data, 1, STDOUT)

    @property
    def queued(self) -> bool:
        """Whether there is something to take."""
        return bool(self._queue)

    @property
    def held(self) -> int:
        """Bytes not written yet: queued, or taken and not released."""
        return self._workers.held + self._log.held

    def take(self, limit: int = WRITE_CHUNK) -> Batch:
        """The oldest entries of one stream, up to ``limit`` bytes (at least one). Their bytes
        stay held until :meth:`release`, so what is being written counts against the limits."""
        parts: list[bytes] = []
        released = {self._workers: 0, self._log: 0}
        size = 0
        stream = self._queue[0][1]
        while (
            self._queue
            and self._queue[0][1] == stream
            and (not parts or size + len(self._queue[0][2]) <= limit)
        ):
            lane, _, data = self._queue.popleft()
            parts.append(data)
            released[lane] += len(data)
            size += len(data)
        return Batch(stream, b"".join(parts), tuple(released.items()))

    def release(self, batch: Batch) -> None:
        """``batch`` was written (or could not be): its room is free again."""
        for lane, size in batch.released:
            lane.held -= size
            self._reopen(lane)

    def statistics(self) -> OutputStatistics:
        return OutputStatistics(self.held, dict(self._workers.total), self._log.total.total())

    def _add(self, lane: _Lane, source: int, data: bytes, lines: int, stream: str) -> bool:
        self._reopen(lane)
        if lane.gap or lane.held + len(data) > lane.limit:
            lane.gap[source] += lines
            lane.total[source] += lines
            self._reopen(lane)  # an entry bigger than half the lane: nothing else will
            return False
        self._append(lane, data, stream)
        return True

    def _reopen(self, lane: _Lane) -> None:
        if lane.gap and lane.held <= lane.limit // 2:
            self._append(lane, self._note(lane.marker(lane.gap)), STDOUT)
            lane.gap = Counter()

    def _append(self, lane: _Lane, data: bytes, stream: str) -> None:
        lane.held += len(data)
        self._queue.append((lane, stream, data))


class _SinkHandler(logging.Handler):
    """Where the master's logger ends: the sink's buffer and ring (never blocks)."""

    def __init__(self, sink: OutputSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.add_record(record, self.format(record))


class OutputSink:
    """The master's log and its workers' output, written in order by one task (:meth:`run`)
    through a thread: worker stdout to stdout, worker stderr to stderr, the master's own lines
    (through the stdlib logger :attr:`logger`) to stdout; all of it to ``log_file`` instead when
    there is one. Adding never waits: see :class:`OutputBuffer` for what happens when a reader
    lags. Every line also goes to :attr:`ring`, for ``stereo logs``."""

    def __init__(
        self,
        writer: Writer | None = None,
        *,
        limit: int = WORKER_BUFFER,
        log_limit: int = LOG_BUFFER,
        log_format: str = "text",
        log_level: str = "info",
        log_file: LogFile | None = None,
    ) -> None:
        self.writers: dict[str, Writer] = (
            {STDOUT: writer, STDERR: writer}
            if writer is not None
            else {STDOUT: _stdout_writer, STDERR: _stderr_writer}
        )
        self.log_file = log_file
        self.log_format = log_format
        self._handler = _SinkHandler(self)
        self._handler.setFormatter(formatter(log_format))
        # A logger of this sink's own, outside logging's tree: an app's or a test's logging
        # set-up never reaches it, and two masters in one process keep apart.
        self.logger = logging.Logger("stereo.master", log_level.upper())
        self.logger.addHandler(self._handler)
        self.buffer = OutputBuffer(limit, log_limit, self._note)
        self.ring = LogRing()
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._new_lines = trio.Event()

    @contextlib.contextmanager
    def redirect(self, writer: Writer) -> Iterator[None]:
        """Write what goes to the terminal through ``writer`` instead, until the context ends
        (the in-place console puts output above its prompt); a --log-file keeps it all. Only
        from the trio side, where the output task reads it."""
        previous, self.writers = self.writers, {STDOUT: writer, STDERR: writer}
        try:
            yield
        finally:
            self.writers = previous

    def log(self, line: str, level: int = logging.INFO) -> None:
        """A line of the master's own, e.g. 'worker 3 exited'. Never blocks, and worker output
        never takes its place."""
        self.logger.log(level, line)

    def add_record(self, record: logging.LogRecord, text: str) -> None:
        """The logger's handler: ``record``, formatted as ``text``."""
        message = record.getMessage().encode(errors="replace")
        level = record.levelname.lower()
        self.ring.append(record.created, level, None, record.process or 0, None, False, message)
        self.buffer.add_log((text + "\n").encode(errors="replace"))
        self._wake.set()
        self._new_lines.set()

    def add_worker_lines(self, source: WorkerSource, lines: list[bytes]) -> None:
        """Never blocks: a worker must not wait for the master's stdout."""
        now = time.time()
        old = source.old()
        worker, pid, stream, pool = source.worker, source.pid, source.stream, source.pool
        self.ring.extend(now, "info", worker, pid, stream, old, lines, pool)
        if self.log_format == "json":
            data = json_lines(now, worker, pid, stream, old, lines, pool)
        else:
            prefix = worker_prefix(worker, pid, old, pool)
            data = b"".join(prefix + line + b"\n" for line in lines)
        self.buffer.add_worker_lines(worker, data, len(lines), stream)
        self._wake.set()
        self._new_lines.set()

    def _note(self, text: str) -> bytes:
        """A warning of the sink's own (lines dropped), formatted as the log is; it goes to the
        output only: the ring has every line."""
        record = self.logger.makeRecord(
            self.logger.name, logging.WARNING, __file__, 0, text, (), None
        )
        return (self._handler.format(record) + "\n").encode(errors="replace")

    def statistics(self) -> OutputStatistics:
        return self.buffer.statistics()

    # -- stereo logs -------------------------------------------------------------------------

    def read_logs(self, after: int | None, ids: list[int] | None, limit: int) -> LogSlice:
        return self.ring.read(after, ids, limit)

    async def wait_logs(self, after: int) -> None:
        """Return once the ring has a line after cursor ``after`` (callers bound the wait)."""
        while self.ring.last_seq <= after:
            if self._new_lines.is_set():
                self._new_lines = trio.Event()
            await self._new_lines.wait()

    # -- the output task ---------------------------------------------------------------------

    async def reopen(self) -> None:
        """SIGUSR1: open --log-file afresh (logrotate moved it away)."""
        if self.log_file is None:
            self.log("SIGUSR1: no --log-file to reopen", logging.WARNING)
            return
        try:
            await trio.to_thread.run_sync(self.log_file.reopen)
        except OSError as exc:
            self.log(
                f"SIGUSR1: cannot reopen {self.log_file.path}: {exc.strerror or exc};"
                " writing on to the file already open",
                logging.ERROR,
            )
            return
        self.log(f"SIGUSR1: reopened {self.log_file.path}")

    async def flush(self) -> None:
        """Wait until everything added so far has been written."""
        while self.buffer.held:
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint()

    def _writer(self, stream: str) -> Writer:
        return self.log_file.write if self.log_file is not None else self.writers[stream]

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
                await trio.to_thread.run_sync(
                    self._writer(batch.stream), batch.data, abandon_on_cancel=True
                )
            except OSError:
                pass  # stdout is gone (closed terminal); workers keep running
            self.buffer.release(batch)


def open_output(
    log_file: str | None, log_format: str = "text", log_level: str = "info"
) -> OutputSink:
    """The master's sink as --log-file, --log-format and --log-level say; ConfigError when the
    log file cannot be opened (so before anything is bound or started)."""
    file = None
    if log_file is not None:
        try:
            file = LogFile(log_file)
        except OSError as exc:
            raise ConfigError(
                f"--log-file {log_file}: cannot open it: {exc.strerror or exc}"
            ) from None
    return OutputSink(log_format=log_format, log_level=log_level, log_file=file)


async def pump_lines(
    stream: trio.abc.ReceiveStream, source: WorkerSource, sink: OutputSink
) -> None:
    """Read a worker's pipe to its end, whatever happens to the lines (see OutputSink)."""
    splitter = LineSplitter()
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            lines = splitter.feed(data) if data else splitter.flush()
            if lines:
                sink.add_worker_lines(source, lines)
            if not data:
                return
