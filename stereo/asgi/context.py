"""What every connection of one worker's ASGI front end shares: the app, its options, the
lifespan state, and the drain.

The drain is a set of hooks rather than an event each connection waits on: an idle keep-alive
connection cancels its read, a busy one finishes its response first, a WebSocket sends close
1012. No task per connection sits waiting for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import trio

from .idle import IdleConnections
from .settings import AsgiSettings
from .types import ASGIApp

ACCESS_BATCH = 256  # access-log lines written at once at most


class ServerContext:
    def __init__(
        self,
        app: ASGIApp,
        settings: AsgiSettings,
        *,
        worker_id: int = 0,
        log: TextIO | None = None,
        access_log: TextIO | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.worker_id = worker_id
        #: The lifespan state (ASGI ``scope["state"]``), or None if the app has no lifespan.
        self.state: dict[str, Any] | None = None
        #: True from the moment the worker began to drain: finish what is under way, start nothing.
        self.draining = False
        #: Called once each when the drain begins; a connection adds one while it can be told.
        self.drain_hooks: set[Callable[[], None]] = set()
        self.open_connections = 0
        #: Keep-alive connections waiting for a request: the timeout's sweep and the drain
        #: close them (one hook for all, so a request costs no set operations).
        self.idle = IdleConnections(settings.timeout_keep_alive)
        self.drain_hooks.add(self.idle.cancel_all)
        self._log = log if log is not None else sys.stderr
        self._access_out = access_log
        self._access_lines: list[str] = []
        self._access_flush_pending = False

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        for hook in list(self.drain_hooks):
            hook()
        self.drain_hooks.clear()

    def log(self, line: str) -> None:
        """A line for people (errors, tracebacks): the worker's stderr, which the master
        prefixes with the slot."""
        print(line, file=self._log, flush=True)

    def access(
        self, client: tuple[str, int] | None, method: str, target: str, version: str, status: int
    ) -> None:
        """One access-log line per response, as uvicorn prints them (if --access-log).

        Lines are written together once the scheduler comes round, not one write each: at
        high rates a write per request would cost more than the request."""
        peer = f"{client[0]}:{client[1]}" if client else "-"
        self._access_lines.append(f'{peer} - "{method} {target} HTTP/{version}" {status}\n')
        if len(self._access_lines) >= ACCESS_BATCH:
            self.flush_access()
        elif not self._access_flush_pending:
            self._access_flush_pending = True
            try:
                trio.lowlevel.spawn_system_task(self._flush_access_soon, name="access log")
            except RuntimeError:  # outside trio: no one to come round
                self.flush_access()

    async def _flush_access_soon(self) -> None:
        try:
            await trio.lowlevel.checkpoint()
        finally:
            self.flush_access()

    def flush_access(self) -> None:
        self._access_flush_pending = False
        if self._access_lines:
            out = self._access_out if self._access_out is not None else sys.stdout
            out.write("".join(self._access_lines))
            out.flush()
            self._access_lines.clear()
