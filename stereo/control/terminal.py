"""The console's terminal, written by one thread only: the console's asyncio loop.

Output reaches the console from other threads (worker output from the master's output thread,
command results from the thread that waits for the master, a ``logs -f`` follower). If any of
them wrote to the terminal itself, it would race prompt_toolkit's renderer, which runs in the
loop: prompt_toolkit's own ``StdoutProxy`` writes from its thread whenever no prompt is running,
so a line arriving while the next prompt starts shared the output buffer with the renderer and
the prompt could be lost (the flaky test_console_in_place). Here every write is handed to the
loop, which prints it above the running prompt (``run_in_terminal``) or, between prompts,
straight out; the writer waits until it is written, so a slow terminal holds the master's
bounded output buffer back instead of a queue here growing without end.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import deque
from collections.abc import Callable

from prompt_toolkit.application import get_app_or_none, run_in_terminal


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class TerminalWriter:
    """:meth:`write` from any thread; :meth:`serve` runs in the loop for as long as it lives.
    Before and after that, writes go straight out, one at a time."""

    def __init__(self, out: Callable[[str], None] = _stdout) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup = asyncio.Event()
        self._pending: deque[tuple[str, threading.Event]] = deque()

    def write(self, text: str) -> None:
        """Print ``text`` (whole lines) and return once it is printed."""
        done = threading.Event()
        with self._lock:
            loop = self._loop
            if loop is None:
                self._out(text)  # under the lock: no loop, so no renderer to race
                return
            if threading.get_ident() == self._loop_thread:
                # From a coroutine of the console, between prompts: nothing renders now.
                self._out(text)
                return
            self._pending.append((text, done))
        loop.call_soon_threadsafe(self._wakeup.set)
        done.wait()

    def write_bytes(self, data: bytes) -> None:
        self.write(data.decode(errors="replace"))

    async def serve(self) -> None:
        with self._lock:
            self._wakeup = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while batch := self._take():
                    try:
                        await self._show("".join(text for text, _ in batch))
                    finally:
                        for _, done in batch:
                            done.set()
        finally:
            with self._lock:
                self._loop = None
                while self._pending:
                    text, done = self._pending.popleft()
                    self._out(text)
                    done.set()

    def _take(self) -> list[tuple[str, threading.Event]]:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        return batch

    async def _show(self, text: str) -> None:
        app = get_app_or_none()
        if app is not None and app.is_running:
            # Erase the prompt (or the live view), print, draw it again.
            await run_in_terminal(lambda: self._out(text))
        else:
            self._out(text)
