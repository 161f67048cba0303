"""A small HTTP load generator for the fault tests: CLIENTS tasks, each opening a new connection
per request, in a loop, and counting successes and failures per named phase."""

from __future__ import annotations

from collections import Counter

import trio

REQUEST = b"GET / HTTP/1.1\r\nHost: stereo-test\r\n\r\n"


class LoadGenerator:
    def __init__(self, host: str, port: int, clients: int = 8, timeout: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.clients = clients
        self.timeout = timeout
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
                await stream.send_all(REQUEST)
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
        if not data.startswith(b"HTTP/1.1 200 OK\r\n"):
            raise ValueError(f"bad response: {data[:80]!r}")
        return data.partition(b"\r\n\r\n")[2].decode().strip()
