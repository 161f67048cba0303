"""Waiting for many connections to become readable without an epoll_ctl per wait.

trio registers a descriptor with EPOLLONESHOT, so every wait costs an epoll_ctl syscall and a
walk through its I/O manager; a keep-alive HTTP connection waits once per request. Here a
connection is registered once, edge-triggered, in one epoll per trio run; one system task waits
(through trio) for that epoll to be readable and wakes the connections that are. An event for a
connection that is not waiting is remembered until it waits.

Edge-triggered means a connection may wait only once it has read everything there was: after a
read that came back short (or with EAGAIN). :class:`~.fastio.SocketIO` keeps to that. Where
there is no epoll (not Linux), :func:`waiter` is None and trio's own wait is used.
"""

from __future__ import annotations

import select
from typing import Any

import trio
from trio.lowlevel import Abort, RunVar, Task, current_task, reschedule, wait_task_rescheduled

_EVENTS = (
    getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLET", 0) | getattr(select, "EPOLLRDHUP", 0)
)
_MAX_EVENTS = 1024


class ReadinessWaiter:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, Task] = {}
        self._ready: set[int] = set()  # readable since their last wait: the next returns at once
        self._registered = 0
        self._polling = False

    def register(self, fd: int) -> None:
        self._epoll.register(fd, _EVENTS)
        self._registered += 1

    def unregister(self, fd: int) -> None:
        """Before the descriptor closes (its number may be reused at once)."""
        self._epoll.unregister(fd)
        self._registered -= 1
        self._ready.discard(fd)
        self._waiting.pop(fd, None)

    async def wait_readable(self, fd: int) -> bool:
        """Wait until ``fd`` is readable; False if it already was (no checkpoint then)."""
        if fd in self._ready:
            self._ready.discard(fd)
            return False
        self._waiting[fd] = current_task()
        if not self._polling:
            self._polling = True
            trio.lowlevel.spawn_system_task(self._poll, name="stereo readiness")

        def abort(_: Any) -> Abort:
            self._waiting.pop(fd, None)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)
        return True

    async def _poll(self) -> None:
        epoll, waiting, ready = self._epoll, self._waiting, self._ready
        try:
            while self._registered:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0, _MAX_EVENTS):
                    task = waiting.pop(fd, None)
                    if task is None:
                        ready.add(fd)
                    else:
                        reschedule(task)
        finally:
            self._polling = False


_WAITER: RunVar[ReadinessWaiter | None] = RunVar("stereo_readiness")


def waiter() -> ReadinessWaiter | None:
    """This trio run's waiter (None where there is no epoll)."""
    try:
        return _WAITER.get()
    except LookupError:
        found = ReadinessWaiter() if hasattr(select, "epoll") else None
        _WAITER.set(found)
        return found
