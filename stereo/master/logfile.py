"""--log-file: where the master's output goes instead of the terminal, reopened on SIGUSR1."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LogFile:
    """--log-file: appended to; :meth:`reopen` (SIGUSR1) opens the path afresh, for logrotate.

    The new file takes the old descriptor's number (dup2), so a write in flight in the output
    thread goes whole to the old file or the new one, never to a closed or reused descriptor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o640)

    def write(self, data: bytes) -> None:
        write_all(self.fd, data)

    def reopen(self) -> None:
        fresh = self._open()
        try:
            os.dup2(fresh, self.fd, inheritable=False)
        finally:
            os.close(fresh)

    def close(self) -> None:
        os.close(self.fd)
