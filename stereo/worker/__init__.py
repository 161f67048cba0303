"""The worker side: the public :class:`~stereo.worker.api.Worker` an app receives (:mod:`.api`),
the listeners it accepts on (:mod:`.listeners`), and the process runtime (:mod:`.runtime`), which
loads the app (:mod:`.loader`) and drives the worker's hub connection: its
:class:`~stereo.outbox.Outbox` and its :class:`~stereo.worker.inbox.Inbox` of subscribed
:class:`~stereo.worker.inbox.MessageStream` iterators.

The public names are re-exported by :mod:`stereo` (and, on first use, here). This package
imports nothing itself: ``python -m stereo.worker`` imports it before :mod:`.__main__` can
defer stop signals.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import MessageStream, Worker, WorkerStatistics

__all__ = ["MessageStream", "Worker", "WorkerStatistics"]


def __getattr__(name: str) -> Any:
    # ``from stereo.worker import Worker`` keeps working (it did when this was one module),
    # without importing anything until a name is asked for.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
