"""Timeouts that judge a worker fairly: only on evidence the master has read, and only over time
during which the master itself was running.

A master that was stopped (SIGSTOP, a debugger, the cgroup freezer, CPU starvation) wakes up with
every deadline past and its workers' heartbeats still unread in their sockets. Judging then would
kill healthy workers. So a wait here ends only when the master ran for the whole window: when a
timer fires late by more than :data:`STALL`, the master was not running, and the window starts
again from the moment it resumed; and a verdict waits while the worker's connection holds bytes
the master has not read yet (they may be the evidence).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

#: A timer firing this late means the master was not running (not merely busy for a moment).
STALL = 0.5


async def wait_silence(
    last_evidence: Callable[[], float], window: float, unread: Callable[[], int]
) -> float:
    """Return once ``window`` seconds of the master's own running time have passed since
    ``last_evidence()`` (re-read at every wake-up) with nothing unread (``unread()`` bytes
    waiting in the connection). Returns how long the silence lasted, as the trio clock saw it."""
    resumed = -float("inf")
    while True:
        deadline = max(last_evidence(), resumed) + window
        if trio.current_time() < deadline:
            await trio.sleep_until(deadline)
            now = trio.current_time()
            if now - deadline > STALL:
                resumed = now  # the master itself was not running: start the window again
            continue
        if unread():
            # Let the connection's reader take what is there (it runs before we do again),
            # then look at the evidence afresh.
            await trio.lowlevel.checkpoint()
            continue
        return trio.current_time() - last_evidence()


async def sleep_running(duration: float) -> None:
    """Sleep ``duration`` seconds of the master's own running time: a stall restarts it."""
    start = trio.current_time()
    await wait_silence(lambda: start, duration, lambda: 0)


async def run_within(
    window: float, unread: Callable[[], int], operation: Callable[[], Awaitable[object]]
) -> bool:
    """Run ``operation`` unless ``window`` seconds of the master's own running time pass first
    with nothing unread (``unread()`` bytes may hold what it waits for). True if it finished;
    what it raised is raised as is, not wrapped in a group."""
    started = trio.current_time()
    finished = False
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def expire() -> None:
            await wait_silence(lambda: started, window, unread)
            nursery.cancel_scope.cancel()

        nursery.start_soon(expire)
        try:
            await operation()
            finished = True
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return finished


async def either(first: trio.Event, second: trio.Event) -> None:
    """Return once either event is set."""
    async with trio.open_nursery() as nursery:
        for event in (first, second):
            nursery.start_soon(_set_then_cancel, event, nursery.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
