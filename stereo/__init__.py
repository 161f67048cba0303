"""stereo: one network app, several worker processes, broadcasts among them via a dumb master.

The public names below are imported on first use (PEP 562), so that importing the package costs
nothing: ``python -m stereo.worker`` imports it before its own first line, and that line must run
before trio is imported (see :mod:`stereo.worker.stopsignals`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .accelerations import accelerations
    from .errors import (
        BindError,
        ClientDisconnected,
        ControlError,
        EncodeError,
        HubClosed,
        MessageTooLarge,
        PoolError,
        PoolProcessDied,
        ProtocolError,
        RemoteTraceback,
        StereoError,
        SubscriberCutOff,
    )
    from .wire.protocol import Message, UndecodablePayload, accelerated
    from .worker.api import MessageStream, Worker, WorkerStatistics
    from .worker.current import current_worker
    from .worker.listeners import Connection, Listener
    from .worker.topics import Event, Subscription, publish, subscribe

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "ClientDisconnected",
    "Connection",
    "ControlError",
    "EncodeError",
    "Event",
    "HubClosed",
    "Listener",
    "Message",
    "MessageStream",
    "MessageTooLarge",
    "PoolError",
    "PoolProcessDied",
    "ProtocolError",
    "RemoteTraceback",
    "StereoError",
    "SubscriberCutOff",
    "Subscription",
    "UndecodablePayload",
    "Worker",
    "WorkerStatistics",
    "__version__",
    "accelerated",
    "accelerations",
    "current_worker",
    "publish",
    "subscribe",
]

# Where each public name is defined: the imports under TYPE_CHECKING, made on first use.
_SOURCES = {
    "BindError": ".errors",
    "ClientDisconnected": ".errors",
    "ControlError": ".errors",
    "EncodeError": ".errors",
    "HubClosed": ".errors",
    "MessageTooLarge": ".errors",
    "PoolError": ".errors",
    "PoolProcessDied": ".errors",
    "ProtocolError": ".errors",
    "RemoteTraceback": ".errors",
    "StereoError": ".errors",
    "SubscriberCutOff": ".errors",
    "Message": ".wire.protocol",
    "UndecodablePayload": ".wire.protocol",
    "accelerated": ".wire.protocol",
    "accelerations": ".accelerations",
    "MessageStream": ".worker.api",
    "Worker": ".worker.api",
    "WorkerStatistics": ".worker.api",
    "Connection": ".worker.listeners",
    "Listener": ".worker.listeners",
    "current_worker": ".worker.current",
    "Event": ".worker.topics",
    "Subscription": ".worker.topics",
    "publish": ".worker.topics",
    "subscribe": ".worker.topics",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        source = _SOURCES.get(name)
        if source is None:  # submodules (`from stereo import exitcodes`) are found after this
            raise AttributeError(f"module 'stereo' has no attribute {name!r}")
        value = getattr(importlib.import_module(source, __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_SOURCES})
