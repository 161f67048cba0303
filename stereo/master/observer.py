"""The observer helper (--metrics, --dashboard; docs/observability.md), supervised by the master.

The master starts ``python -m stereo.observe`` once its control socket listens and starts it
again whenever it exits. The helper reads the master through that socket like any client, so
the master knows nothing about HTTP or Prometheus; it runs as the master's user (the control
socket admits no other). Its stdin is a pipe from the master: when the master is gone, even
killed, the pipe ends and so does the helper. It writes its own lines, prefixed ``[observe]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial

import trio

from .. import exitcodes
from .config import Settings

RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0)  # after quick exits in a row; then every 5 s
QUICK_EXIT = 10.0  # a helper that ran longer than this starts the delays over
STOP_TIMEOUT = 5.0


async def _terminate(process: trio.Process) -> None:
    """deliver_cancel: TERM, then KILL if it lingers."""
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT) as waited:
        waited.shield = True
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def run_observer_if_possible(
    nursery: trio.Nursery,
    settings: Settings,
    control_path: str | None,
    log: Callable[[str], None],
) -> None:
    """Start the observer's task, unless the control socket (all it reads) is disabled."""
    if control_path is None:
        log("no control socket: --metrics and --dashboard are not served")
        return
    nursery.start_soon(run_observer, settings, control_path, log)


async def run_observer(settings: Settings, control_path: str, log: Callable[[str], None]) -> None:
    """Keep one observer process running until cancelled (the master's teardown)."""
    argv = [
        sys.executable,
        "-m",
        "stereo.observe",
        "--control",
        control_path,
        "--watch-stdin",
        *settings.observer,
    ]
    env = dict(os.environ)
    if settings.observer_token:
        env["STEREO_DASHBOARD_TOKEN"] = settings.observer_token
    quick_exits = 0
    while True:
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    check=False,
                    deliver_cancel=_terminate,
                    stdin=subprocess.PIPE,
                    env=env,
                    process_group=0,  # Ctrl-C in the terminal reaches the master only
                )
            )
            code = await process.wait()
        if code == 2 and trio.current_time() - started < QUICK_EXIT:
            log("observer cannot listen where asked (see above); not restarting it")
            return
        quick_exits = quick_exits + 1 if trio.current_time() - started < QUICK_EXIT else 0
        delay = RESTART_DELAYS[min(quick_exits, len(RESTART_DELAYS)) - 1] if quick_exits else 0.5
        log(f"observer exited: {exitcodes.describe(code)}; restarting in {delay:g} s")
        await trio.sleep(delay)
