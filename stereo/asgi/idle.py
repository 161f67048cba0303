"""The keep-alive timeout: connections waiting for their next request, closed by one sweep.

Moving a cancel scope's deadline twice per request (lift it while the app runs, set it again
after) cost more than parsing the request. Instead a connection notes when it went idle (a dict
write) and one task per worker, started when the first connection goes idle, cancels those idle
for longer than --timeout-keep-alive. A connection is closed between the timeout and 1.25 times
it, which is what a keep-alive timeout promises: an idle connection does not live forever.
Idle times are read from the system's monotonic clock (cheaper than trio's), so trio's MockClock
does not move them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio


class IdleConnections:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._since: dict[Callable[[], None], float] = {}
        self._sweeping = False

    def __len__(self) -> int:
        return len(self._since)

    def enter(self, cancel: Callable[[], None]) -> None:
        """The connection whose ``cancel`` this is waits for a request from now."""
        self._since[cancel] = time.monotonic()
        if not self._sweeping:
            self._sweeping = True
            # A system task: it must outlive any one connection, and the sweep cannot fail.
            trio.lowlevel.spawn_system_task(self._sweep, name="stereo keep-alive sweep")

    def leave(self, cancel: Callable[[], None]) -> bool:
        """The connection is busy from now; False if it was cancelled (timed out, drained)."""
        return self._since.pop(cancel, None) is not None

    def cancel_all(self) -> None:
        """The drain: every idle connection closes now."""
        idle, self._since = self._since, {}
        for cancel in idle:
            cancel()

    def expire(self, now: float) -> None:
        """Cancel the connections idle since before ``now - timeout``."""
        limit = now - self.timeout
        expired = [cancel for cancel, since in self._since.items() if since <= limit]
        for cancel in expired:
            del self._since[cancel]
            cancel()

    async def _sweep(self) -> None:
        try:
            while self._since:
                await trio.sleep(self.timeout / 4)
                self.expire(time.monotonic())
        finally:
            self._sweeping = False
