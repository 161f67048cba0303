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

from .idle import IdleConnections
from .settings import AsgiSettings
from .types import ASGIApp


class ServerContext:
    def __init__(
        self,
        app: ASGIApp,
        settings: AsgiSettings,
        *,
        worker_id: int = 0,
        log: TextIO | None = None,
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
        """One access-log line per response, as uvicorn prints them (if --access-log)."""
        peer = f"{client[0]}:{client[1]}" if client else "-"
        print(f'{peer} - "{method} {target} HTTP/{version}" {status}', flush=False)
