"""The worker side: the public :class:`Worker` an app receives (:mod:`.api`), the listeners it
accepts on (:mod:`.listeners`), and the process runtime (:mod:`.runtime`), which loads the app
(:mod:`.loader`) and drives the worker's hub connection: its :class:`~stereo.outbox.Outbox` and its
:class:`~stereo.worker.inbox.Inbox` of subscribed :class:`MessageStream` iterators."""

from .api import MessageStream, Worker, WorkerStatistics

__all__ = ["MessageStream", "Worker", "WorkerStatistics"]
