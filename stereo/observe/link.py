"""The exporter's and dashboard's connection to the master's control socket, used from trio.

The control client is blocking (it is also ``stereo ctl``'s); requests go through a worker
thread, one at a time on one connection, reconnecting after the master was unreachable.
"""

from __future__ import annotations

from typing import Any

import trio

from ..control.client import ControlClient, ControlTimeout, ControlUnreachable

REQUEST_TIMEOUT = 10.0


class MasterLink:
    def __init__(self, control_path: str) -> None:
        self.control_path = control_path
        self._client: ControlClient | None = None
        self._lock = trio.Lock()

    async def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """The command's result; raises ControlError (ControlUnreachable when no master
        answers, or the master's own refusal)."""
        async with self._lock:
            return await trio.to_thread.run_sync(self._request, command, args)

    def _request(self, command: str, args: dict[str, Any] | None) -> Any:
        if self._client is None:
            self._client = ControlClient.connect(self.control_path, request_timeout=REQUEST_TIMEOUT)
        try:
            return self._client.request(command, args)
        except (ControlUnreachable, ControlTimeout):
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
