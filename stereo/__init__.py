"""stereo: one network app, several worker processes, broadcasts among them via a dumb master."""

from __future__ import annotations

from .errors import (
    BindError,
    ControlError,
    EncodeError,
    HubClosed,
    MessageTooLarge,
    ProtocolError,
    StereoError,
)
from .wire.protocol import Message, UndecodablePayload, accelerated
from .worker.api import MessageStream, Worker, WorkerStatistics
from .worker.listeners import Connection, Listener

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "Connection",
    "ControlError",
    "EncodeError",
    "HubClosed",
    "Listener",
    "Message",
    "MessageStream",
    "MessageTooLarge",
    "ProtocolError",
    "StereoError",
    "UndecodablePayload",
    "Worker",
    "WorkerStatistics",
    "__version__",
    "accelerated",
]
