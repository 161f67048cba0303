"""--chdir: the master's working directory, entered before anything is loaded or bound, so that
relative paths (--app-dir, --pid, unix binds, --reload-dir) are taken from it; workers inherit it.

The directory the master was started in is remembered for a master upgrade (SIGUSR2): the new
master is started there, so that a relative --chdir names the same directory again.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

_launch_dir: str | None = None  # the process's working directory before enter() changed it


def enter(directory: str | None) -> None:
    """Make ``directory`` (if given) the working directory; ConfigError if it cannot be."""
    global _launch_dir
    if _launch_dir is None:
        _launch_dir = os.getcwd()
    if directory is None:
        return
    try:
        os.chdir(directory)
    except OSError as exc:
        raise ConfigError(f"--chdir {directory}: {exc.strerror or exc}") from None


def launch_dir() -> str:
    """Where this process was started (before --chdir)."""
    return _launch_dir if _launch_dir is not None else os.getcwd()
