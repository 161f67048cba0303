"""Named exit codes of a worker process, so the master can tell a crash loop from a stop (and
the one of `stereo run` that says the app could not boot at all).

Codes 1 and 2 keep their usual meanings (uncaught exception, usage); negative values in the
master's records mean "killed by that signal".
"""

from __future__ import annotations

from typing import Final

STOPPED: Final = 0  # stopped on request, or serve() returned
APP_CRASHED: Final = 1  # serve() raised (Python's own code for an uncaught exception)
WORKER_BOOT_ERROR: Final = 3  # no usable hub connection: handshake failed
APP_LOAD_ERROR: Final = 4  # the app could not be imported or found; restarting will not help
HUB_LOST: Final = 5  # the master went away or cut this worker off, or the app closed the hub fd

NAMES: Final = {
    STOPPED: "exited normally",
    APP_CRASHED: "app crashed",
    WORKER_BOOT_ERROR: "worker boot error",
    APP_LOAD_ERROR: "app load error",
    HUB_LOST: "hub connection lost",
}


# Exit statuses of `stereo run` itself (docs/cli.md#exit-status), beside 0 (stopped) and 2 (usage,
# or the master could not start): at start-up a worker's boot error (exit 4) ended the master,
# as gunicorn exits 3 when a worker fails to boot. A service manager need not restart it.
RUN_APP_BOOT_FAILED: Final = 3


def describe(returncode: int) -> str:
    """A short human reason for a worker's exit status (as subprocess reports it)."""
    if returncode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode} ({NAMES.get(returncode, 'error')})"
