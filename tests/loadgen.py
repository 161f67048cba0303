"""A small HTTP load generator for the fault tests: CLIENTS tasks, each opening a new connection
per request, in a loop, and counting successes and failures per named phase."""

from __future__ import annotations

from collections import Counter

import trio

REQUEST = b"GET / HTTP/1.1\r\nHost: stereo-test\r\n\r\n"


class LoadGenerator:
    def __init__(
        self,
        host: str,
        port: int,
        clients: int = 8,
        timeout: float = 15.0,
        request: bytes = REQUEST,
    ) -> None:
        self.host = host
        self.port = port
        self.clients = clients
        self.timeout = timeout
        self.request = request
        self.phase = "start"  # failures are counted in the phase current when they are seen
        self.ok = 0
        self.ok_by_phase: Counter[str] = Counter()
        self.failed_by_phase: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []
        self.bodies: Counter[str] = Counter()
        self.last_bodies: list[str] = []
        self._stop = trio.Event()
        self._progress = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.clients):
                nursery.start_soon(self._client)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def wait_ok(self, count: int) -> None:
        """Wait until ``count`` more requests have succeeded."""
        target = self.ok + count
        while self.ok < target:
            await self._progress.wait()

    def summary(self) -> dict[str, tuple[int, int]]:
        phases = dict.fromkeys([*self.ok_by_phase, *self.failed_by_phase])
        return {p: (self.ok_by_phase[p], self.failed_by_phase[p]) for p in phases}

    async def _client(self) -> None:
        while True:
            try:
                body = await self._request()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                self.failed_by_phase[self.phase] += 1
                self.failures.append((self.phase, f"{type(exc).__name__}: {exc}"))
            else:
                self.ok += 1
                self.ok_by_phase[self.phase] += 1
                self.bodies[body] += 1
                self.last_bodies = [*self.last_bodies[-(4 * self.clients) :], body]
            self._progress.set()
            self._progress = trio.Event()

    async def _request(self) -> str:
        with trio.fail_after(self.timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
            async with stream:
                await stream.send_all(self.request)
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
        if not data.startswith(b"HTTP/1.1 200 OK\r\n"):
            raise ValueError(f"bad response: {data[:80]!r}")
        return data.partition(b"\r\n\r\n")[2].decode().strip()


class KeepAliveLoad(LoadGenerator):
    """Clients that keep their connection open across requests, as browsers and HTTP client
    libraries do, reading each response by its Content-Length.

    A request sent on a reused connection that the server closed before any byte of an answer
    (an idle keep-alive connection closed by a drain) is sent again on a new connection, as
    RFC 9112 section 9.3.1 allows for idempotent requests and every HTTP client library does;
    those are counted in ``retried``, not as failures. Anything else is a failure.
    """

    def __init__(self, host: str, port: int, path: str = "/", **kwargs: object) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: stereo-test\r\n\r\n".encode()
        super().__init__(host, port, request=request, **kwargs)  # type: ignore[arg-type]
        self.retried = 0
        self.reused = 0

    async def _client(self) -> None:
        stream: trio.SocketStream | None = None
        buffer = b""
        try:
            while True:
                try:
                    with trio.fail_after(self.timeout):
                        reused = stream is not None
                        if stream is None:
                            stream = await trio.open_tcp_stream(self.host, self.port)
                            buffer = b""
                        await stream.send_all(self.request)
                        head, body, buffer, close = await _read_response(stream, buffer)
                        if head is None:
                            if not reused:
                                raise ValueError("connection closed before an answer")
                            self.retried += 1
                            await stream.aclose()
                            stream = None
                            continue
                        self.reused += reused
                        if not head.startswith(b"HTTP/1.1 200 OK\r\n"):
                            raise ValueError(f"bad response: {head[:80]!r}")
                        if close:
                            await stream.aclose()
                            stream = None
                except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                    self.failed_by_phase[self.phase] += 1
                    self.failures.append((self.phase, f"{type(exc).__name__}: {exc}"))
                    if stream is not None:
                        await stream.aclose()
                    stream = None
                else:
                    self.ok += 1
                    self.ok_by_phase[self.phase] += 1
                    text = body.decode().strip()
                    self.bodies[text] += 1
                    self.last_bodies = [*self.last_bodies[-(4 * self.clients) :], text]
                self._progress.set()
                self._progress = trio.Event()
        finally:
            if stream is not None:  # stopped (cancelled) with a connection open
                await stream.aclose()


async def _read_response(
    stream: trio.SocketStream, buffer: bytes
) -> tuple[bytes | None, bytes, bytes, bool]:
    """(head, body, what follows, server closes) of one Content-Length response; head None if
    the connection ended before any byte of it."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                raise ValueError(f"connection closed mid-answer: {buffer[:80]!r}")
            return None, b"", b"", True
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("connection closed mid-body")
        rest += chunk
    return head, rest[:length], rest[length:], headers.get(b"connection") == b"close"
