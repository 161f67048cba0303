"""--pid FILE: the running master's pid, for init scripts and monitors.

- Before anything is bound, :meth:`PidFile.claim` refuses a file that names a live stereo master
  and removes a stale one (its master crashed). A file that does not hold a pid is refused too:
  it may be something else, given by mistake, that must not be overwritten.
- Once the sockets are bound, :meth:`PidFile.write` writes it atomically (a reader never sees
  half a pid). A new master taking over in an upgrade (SIGUSR2) claims nothing (its predecessor
  is alive, by design) and writes the file only once it has taken over.
- At exit, :meth:`PidFile.remove` removes it only if it still holds this master's pid: an old
  master stepping aside leaves its successor's file alone.

Telling a live master from a stale file (:func:`is_master`): the pid must be alive, not a zombie,
started before the file was written (else the pid was reused), and its command line must be a
``stereo run``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import psutil

from ..errors import ConfigError

# Clock granularity of file times and process start times (jiffies): a master writes its file
# after it started, but the two clocks may disagree by this much.
START_SLACK = 1.0


def looks_like_stereo_run(cmdline: Sequence[str]) -> bool:
    """``stereo run ...`` or ``python -m stereo run ...`` (pure: for a process's argv)."""
    for index, arg in enumerate(cmdline):
        script = os.path.basename(arg) == "stereo"
        module = arg == "stereo" and index > 0 and cmdline[index - 1] == "-m"
        if script or module:
            return "run" in cmdline[index + 1 :]
    return False


def is_master(pid: int, written_at: float) -> bool:
    """Whether ``pid`` is a live stereo master that could have written a pid file at
    ``written_at`` (a time.time()); an unreadable process counts as one (refuse, to be safe)."""
    if pid == os.getpid():
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if process.create_time() > written_at + START_SLACK:
            return False  # started after the file was written: the pid was reused
        return looks_like_stereo_run(process.cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def _read(self) -> tuple[int, float] | None:
        """The pid in the file and when it was written; None if there is no file."""
        try:
            with open(self.path, "rb") as file:
                text = file.read(64)
                written_at = os.fstat(file.fileno()).st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"--pid {self.path}: {exc.strerror or exc}") from None
        try:
            pid = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            pid = 0
        if pid <= 0:
            raise ConfigError(
                f"--pid {self.path}: exists and does not hold a pid; refusing to overwrite it"
            )
        return pid, written_at

    def claim(self) -> str | None:
        """Make sure no live master holds the file: ConfigError if one does; a stale file is
        removed. Returns a note for the log when a stale one was."""
        found = self._read()
        if found is None:
            return None
        pid, written_at = found
        if is_master(pid, written_at):
            raise ConfigError(
                f"--pid {self.path}: master pid {pid} is running; stop it first"
                " (or upgrade it in place with SIGUSR2)"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return f"removed stale pid file {self.path} (pid {pid} is not a running master)"

    def write(self) -> None:
        """Write this process's pid, atomically; ConfigError if it cannot be written."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)  # a leftover of a crash with our pid
            # Never through a symbolic link someone planted (e.g. in /tmp): a fresh file only.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(temporary, flags, 0o644)
            try:
                os.fchmod(fd, 0o644)  # readable by monitors, whatever the umask
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ConfigError(
                f"--pid {self.path}: cannot write it: {exc.strerror or exc}"
            ) from None

    def remove(self) -> None:
        """Remove the file if it still holds this process's pid."""
        with contextlib.suppress(OSError, ConfigError):
            found = self._read()
            if found is not None and found[0] == os.getpid():
                os.unlink(self.path)
