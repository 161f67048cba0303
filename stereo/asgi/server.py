"""One worker's ASGI front end: lifespan startup, then accept on the worker's listeners, one
task per connection, until the worker drains; lifespan shutdown last.

The worker runtime calls :func:`serve_asgi` in place of a ``serve(worker)`` function. It knows
the worker only by the shape it needs (:class:`WorkerLike`), so this package never imports the
worker's: the worker wraps the front end, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from ..errors import AppStartError
from .context import ServerContext
from .http import refuse_busy, serve_connection
from .lifespan import Lifespan
from .settings import AsgiSettings
from .types import ASGIApp

NO_LISTENERS = (
    "the app is an ASGI app but this worker has no listening socket: give `stereo run` a --bind"
    " (HOST:PORT, unix:PATH or fd://N)"
)


class WorkerLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def listeners(self) -> Sequence[trio.abc.Listener[Any]]: ...
    @property
    def stopping(self) -> trio.Event: ...


async def serve_asgi(
    app: ASGIApp, settings: AsgiSettings, worker: WorkerLike, ready: Callable[[], None]
) -> None:
    """Serve ``app`` until cancelled (the runtime cancels once a drain has closed every
    connection). ``ready`` is called once lifespan startup has completed.

    Raises AppStartError if there is nothing to listen on or the app's startup failed.
    """
    if not worker.listeners:
        raise AppStartError(NO_LISTENERS)
    ctx = ServerContext(app, settings, worker_id=worker.id)
    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(ctx)
        await lifespan.startup(nursery)
        ctx.state = lifespan.state
        try:
            ready()
            nursery.start_soon(_drain_on_stop, worker.stopping, ctx)
            await trio.serve_listeners(_handler(ctx), list(worker.listeners))
        finally:
            await lifespan.shutdown()


async def _drain_on_stop(stopping: trio.Event, ctx: ServerContext) -> None:
    await stopping.wait()
    ctx.begin_drain()


def _handler(ctx: ServerContext) -> Callable[[Any], Any]:
    limit = ctx.settings.limit_concurrency

    async def handle(stream: Any) -> None:
        ctx.open_connections += 1
        try:
            if limit is not None and ctx.open_connections > limit:
                await refuse_busy(stream)
            else:
                await serve_connection(stream, ctx)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client went away: nothing to answer, nobody to tell
        finally:
            ctx.open_connections -= 1
            await stream.aclose()

    return handle


__all__ = ["AppStartError", "WorkerLike", "serve_asgi"]
