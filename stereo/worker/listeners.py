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
    """Counts open connections and accepts under way; lets the worker wait until both are 0."""

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self.accepting = 0
        self._idle = trio.Event()
        self._idle.set()

    def _busier(self) -> None:
        if self._idle.is_set():
            self._idle = trio.Event()

    def _calmer(self) -> None:
        if self.open == 0 and self.accepting == 0:
            self._idle.set()

    def opened(self) -> None:
        self.open += 1
        self.accepted += 1
        self._busier()

    def closed(self) -> None:
        self.open -= 1
        self._calmer()

    def accept_started(self) -> None:
        self.accepting += 1
        self._busier()

    def accept_ended(self) -> None:
        self.accepting -= 1
        self._calmer()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Connection(trio.abc.HalfCloseableStream):
    """A :class:`trio.SocketStream` that reports its closing to the worker's drain logic."""

    def __init__(self, stream: trio.SocketStream, tracker: ConnectionTracker) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._tracker: ConnectionTracker | None = tracker
        tracker.opened()
        # The per-request calls go straight to the SocketStream: a wrapping coroutine added 2 to
        # 4 % to a minimal request/response round trip (client included) in a micro-benchmark.
        self.send_all = stream.send_all  # type: ignore[method-assign]
        self.receive_some = stream.receive_some  # type: ignore[method-assign]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

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
        self._accepts: set[trio.CancelScope] = set()

    async def accept(self) -> Connection:
        if not self._draining:
            scope = trio.CancelScope()
            self._accepts.add(scope)
            self._tracker.accept_started()
            try:
                with scope:
                    # An accept that already took a connection from the kernel returns it even
                    # when cancelled (trio finishes with a shielded checkpoint), and Connection
                    # counts it open before this accept counts as ended: a drain cannot miss it.
                    return Connection(await self._listener.accept(), self._tracker)
            except trio.ClosedResourceError:
                if not self._draining:
                    raise
            finally:
                self._accepts.discard(scope)
                self._tracker.accept_ended()
        # Draining: never accept again, but do not fail the app's serve_listeners either.
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def stop_accepting(self) -> None:
        """Close this worker's copy of the socket; accepts under way end, later ones park."""
        self._draining = True
        for scope in self._accepts:
            scope.cancel()
        self._listener.socket.close()

    async def aclose(self) -> None:
        await self._listener.aclose()
