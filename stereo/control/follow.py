"""Following the master's log from a client: long polls of the ``logs`` command, each answered
when new lines arrive (or empty after a while), for ``stereo logs -f`` and the console's
``logs -f``. Nothing here sleeps; the master holds each request until it has lines.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ControlError
from ..logs import RING_LINES
from .client import ControlClient
from .render import format_logs

#: Each long poll asks the master to wait this long for new lines (at most its MAX_LOG_WAIT), and
#: allows it this much more to answer.
FOLLOW_WAIT = 25.0
FOLLOW_SLACK = 10.0


def follow(
    client: ControlClient, ids: list[int] | None, after: int | None, limit: int = 10
) -> Iterator[dict[str, Any]]:
    """``logs`` results: the last ``limit`` lines (``after`` None) or those after ``after``,
    then every new batch, for ever. Raises ControlError (ControlUnreachable once the master is
    gone)."""
    chosen = {"ids": ids} if ids else {}
    if after is None:
        result = client.request("logs", {"limit": limit, **chosen})
        yield result
        after = result["next"]
    while True:
        request = {"after": after, "wait": FOLLOW_WAIT, "limit": RING_LINES, **chosen}
        result = client.request("logs", request, timeout=FOLLOW_WAIT + FOLLOW_SLACK)
        if result["lines"] or result["missed"]:
            yield result
        after = result["next"]


class LogFollower:
    """The console's ``logs -f``: a thread with a connection of its own (the console's stays free
    for commands) that shows new lines through ``show`` until :meth:`stop`."""

    def __init__(self, path: str, ids: list[int] | None, show: Callable[[str], None]) -> None:
        self.path = path
        self.ids = ids
        self.show = show
        self._stopped = threading.Event()
        self._client: ControlClient | None = None
        self._thread = threading.Thread(target=self._run, name="stereo-logs-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        client = self._client
        if client is not None:  # wake the long poll: its recv fails at once
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            with ControlClient.connect(self.path) as client:
                self._client = client
                if self._stopped.is_set():
                    return
                for result in follow(client, self.ids, None):
                    if self._stopped.is_set():
                        return
                    self.show(format_logs(result))
        except ControlError as exc:
            if not self._stopped.is_set():
                self.show(f"logs -f ended: {exc}")
