"""Listeners over the inherited sockets that can drain.

A graceful stop must stop accepting at once, yet let connections already accepted finish. trio's
``serve_listeners`` offers no hook for that, so the worker hands the app these wrappers: closing
one makes ``accept`` park forever instead of raising (so ``serve_listeners`` keeps its handler
nursery alive), and every accepted stream is counted until it is closed.
"""

from __future__ import annotations

import socket as stdlib_socket

import trio


class ConnectionTracker:
    """Counts open connections; lets the worker wait for the count to reach zero."""

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self._idle = trio.Event()
        self._idle.set()

    def opened(self) -> None:
        self.open += 1
        self.accepted += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Connection(trio.abc.HalfCloseableStream):
    """A :class:`trio.SocketStream` that reports its closing to the worker's drain logic."""

    def __init__(self, stream: trio.SocketStream, tracker: ConnectionTracker) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._tracker: ConnectionTracker | None = tracker
        tracker.opened()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(bytes(data) if isinstance(data, bytearray) else data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.stream.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return self.stream.getsockopt(level, option)

    async def aclose(self) -> None:
        tracker, self._tracker = self._tracker, None
        try:
            await self.stream.aclose()
        finally:
            if tracker is not None:
                tracker.closed()


class Listener(trio.abc.Listener[Connection]):
    """Accepts on one socket the master bound; works with :func:`trio.serve_listeners`."""

    def __init__(self, sock: stdlib_socket.socket, tracker: ConnectionTracker) -> None:
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self.socket = self._listener.socket
        self._tracker = tracker
        self._draining = False

    async def accept(self) -> Connection:
        try:
            stream = await self._listener.accept()
        except trio.ClosedResourceError:
            if not self._draining:
                raise
            # Draining: never accept again, but do not fail the app's serve_listeners either.
            await trio.sleep_forever()
        return Connection(stream, self._tracker)

    def stop_accepting(self) -> None:
        """Close this worker's copy of the socket; accept() parks instead of raising."""
        self._draining = True
        self._listener.socket.close()

    async def aclose(self) -> None:
        await self._listener.aclose()
