"""Worker output: split each worker's stdout/stderr into lines and print them with its name.

Writing goes through one task and a thread, so a slow terminal or a full pipe on the master's
stdout slows the workers' printing (backpressure through their pipes), never the relay.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import trio

MAX_LINE = 64 * 1024  # a longer "line" is cut into pieces rather than buffered without bound


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


class OutputSink:
    """Collects prefixed lines from every worker and writes them in order from one task."""

    def __init__(self, writer: Writer | None = None) -> None:
        self.writer = writer or _stdout_writer
        self._send, self._receive = trio.open_memory_channel[bytes](256)
        self._writing = False
        self._drained = trio.Event()
        # Lines sent but not yet written. The channel's buffer count alone is not enough: an
        # item sent while the writer task waits goes straight to it, never into the buffer.
        self._queued = 0

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
        """A line of the master's own, e.g. '[stereo] worker 3 exited'. Never blocks."""
        try:
            self._send.send_nowait(f"[stereo] {line}\n".encode())
            self._queued += 1
        except trio.WouldBlock:
            pass  # the terminal is stuck; never let logging stall the master

    async def write_line(self, data: bytes) -> None:
        self._queued += 1  # before: send() checkpoints after handing the line over
        try:
            await self._send.send(data)
        except BaseException:
            self._queued -= 1
            raise

    async def flush(self) -> None:
        """Wait until everything queued so far has been written."""
        while self._writing or self._queued:
            self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        async for first in self._receive:
            self._writing = True
            batch = [first]
            while True:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                # abandon_on_cancel: a write blocked on a stuck stdout must not keep the master
                # from exiting.
                await trio.to_thread.run_sync(self.writer, b"".join(batch), abandon_on_cancel=True)
            except OSError:
                pass  # stdout is gone (closed terminal); workers keep running
            self._writing = False
            self._queued -= len(batch)
            if not self._queued:
                self._drained.set()


async def pump_lines(stream: trio.abc.ReceiveStream, prefix: bytes, sink: OutputSink) -> None:
    splitter = LineSplitter()
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            lines = splitter.feed(data) if data else splitter.flush()
            if lines:
                await sink.write_line(b"".join(prefix + line + b"\n" for line in lines))
            if not data:
                return
