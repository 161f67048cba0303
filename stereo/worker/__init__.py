"""The worker side: the public :class:`Worker` an app receives (:mod:`.api`), the listeners it
accepts on (:mod:`.listeners`), and the process runtime that drives both (:mod:`.runtime`)."""

from .api import MessageStream, Worker, WorkerStatistics

__all__ = ["MessageStream", "Worker", "WorkerStatistics"]
