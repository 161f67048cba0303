"""The dashboard's recent log lines, behind one small interface (:class:`LogSource`).

:class:`MasterLogs` reads the master's ring of recent lines with the ``logs`` control command
(after a cursor, so each line comes once); a master without that command gives none, and the
panel says so. The dashboard's own lines (each control action) are added by :meth:`note`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from ..errors import ControlError
from .link import MasterLink

KEPT = 200  # lines the dashboard keeps for a page that connects
BATCH = 200  # lines asked for per tick


class LogSource(Protocol):
    async def fetch(self) -> list[dict[str, Any]]:
        """Lines new since the last call, oldest first: maps with at least ``time``,
        ``source`` and ``message`` (the ``logs`` command's shape, docs/logging.md)."""
        ...


class MasterLogs:
    def __init__(self, link: MasterLink) -> None:
        self.link = link
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.available = True  # False: this master has no `logs` command
        self._cursor: int | None = None
        self._own: list[dict[str, Any]] = []

    def note(self, message: str) -> None:
        """A line of the dashboard's own (a control action), shown with the master's."""
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        self._own.append({"time": stamp, "source": "dashboard", "message": message})

    async def fetch(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        if self.available:
            args: dict[str, Any] = {"limit": BATCH}
            if self._cursor is not None:
                args["after"] = self._cursor
            try:
                reply = await self.link.request("logs", args)
            except ControlError as exc:
                if "unknown command" not in str(exc):
                    raise
                self.available = False
            else:
                self._cursor = int(reply["next"])
                lines = list(reply["lines"])
        lines += self._own
        self._own = []
        self.recent.extend(lines)
        return lines
