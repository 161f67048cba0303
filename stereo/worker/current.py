"""``stereo.current_worker()``: this process's :class:`~stereo.worker.api.Worker`, from anywhere.

An ASGI app never receives the worker as an argument (its route handlers get a request), so the
runtime records the one worker of this process here as soon as it exists.
"""

from __future__ import annotations

from .api import Worker

_worker: Worker | None = None


def install(worker: Worker) -> None:
    global _worker
    _worker = worker


def current_worker() -> Worker:
    """The worker this process runs as; RuntimeError outside a worker started by `stereo run`."""
    if _worker is None:
        raise RuntimeError(
            "stereo.current_worker() is only available in a worker process started by"
            " `stereo run` (after its app was loaded)"
        )
    return _worker
