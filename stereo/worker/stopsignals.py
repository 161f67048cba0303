"""Stop signals that arrive before the worker's trio loop listens for them.

A worker may be told to stop the moment it is spawned (a ``remove`` right after an ``add``, a
shutdown, an operator's kill), while Python is still importing trio or the app. Left to the
default action, SIGTERM or SIGINT would then kill it (exit -15: to the master, a kill from
outside, although it was only asked to stop). ``python -m stereo.worker`` calls :func:`defer`
first, before anything heavy is imported; the signals are remembered, and the runtime acts on
them once it can: before the app runs, by exiting 0 at once (stopped); later, its signal task
handles them as it handles every stop signal.

This module imports only :mod:`signal`, so that it can run that early.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_received: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def defer() -> None:
    """Remember stop signals instead of dying of them, until the runtime listens itself (its
    trio receiver restores this handler when it closes, so a late one is remembered too)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _remember)


def requested() -> bool:
    """Whether a stop signal arrived since :func:`defer` that nobody took yet."""
    return bool(_received)


def take() -> list[int]:
    """The stop signals received and not taken yet, oldest first; they count as taken."""
    taken = _received[:]
    del _received[: len(taken)]
    return taken
