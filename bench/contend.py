"""The "contended" condition: busy-loop processes competing for the cores while a leg runs.

Issue 16 measures the relay and latency legs twice: on a quiet machine, and with two busy loops
on its two cores, which is what a relay shares a server with in production. Each loop is a plain
``python -c`` process spinning in ``while True: pass``. It says ``spinning`` once it is about to
spin, and the harness waits for that line, so a leg never starts before its competition does.

Every loop is bounded three times: :func:`busy_loops` SIGKILLs and reaps them when its block
ends (whatever ends it); each loop asks Linux to SIGKILL it when the harness dies (a harness
killed by a signal runs no ``finally``); and each arms ``signal.alarm`` on itself, so even where
neither of those works it dies by SIGALRM when its time is up.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator

BUSY_LOOPS = 2
# Longer than any leg (a relay worker gives up after 300 s), short enough not to outlive a run.
BUSY_SECONDS = 600.0
READY = "spinning"
# The harness's pid in each loop's command line: a test (or a person) can tell a run's loops
# from anyone else's.
TAG = "stereo-bench busy loop for pid"


def busy_loop_argv(seconds: float, python: str = sys.executable) -> list[str]:
    parent = os.getpid()
    code = (
        f"# {TAG} {parent}\n"
        "import os, signal, sys\n"
        f"signal.alarm({max(1, math.ceil(seconds))})\n"
        "if sys.platform == 'linux':\n"
        "    import ctypes\n"
        "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
        # The harness may have died before the prctl: then nobody would send the signal.
        f"    if os.getppid() != {parent}:\n"
        "        sys.exit(1)\n"
        f"print({READY!r}, flush=True)\n"
        "while True:\n"
        "    pass\n"
    )
    return [python, "-c", code]


@contextlib.contextmanager
def busy_loops(n: int = BUSY_LOOPS, seconds: float = BUSY_SECONDS) -> Iterator[list[int]]:
    """Run ``n`` busy loops for the block; yields their pids once every one of them spins."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    busy_loop_argv(seconds),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"a busy loop did not start (exit code {proc.wait()})")
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
