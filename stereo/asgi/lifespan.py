"""The ASGI lifespan protocol (asgiref specs/lifespan.rst) for one worker.

The app's lifespan call runs as a task shielded from the worker's cancellation: a drain cancels
the front end, and the app must still be told ``lifespan.shutdown`` and be let finish it (bounded
by SHUTDOWN_TIMEOUT here and by the master's --graceful-timeout). An app that raises before it
answers startup has no lifespan support, as uvicorn's ``--lifespan auto`` reads it: it is served
without one.
"""

from __future__ import annotations

import traceback
from typing import Any

import trio

from ..errors import AppStartError
from .context import ServerContext
from .types import ASGI_VERSION, ASGIMessage

SHUTDOWN_TIMEOUT = 30.0


class Lifespan:
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self.state: dict[str, Any] = {}
        self._to_app, self._app_receives = trio.open_memory_channel[ASGIMessage](1)
        self._answer, self._answers = trio.open_memory_channel[ASGIMessage](1)
        self._supported = True
        self._scope = trio.CancelScope(shield=True)

    async def startup(self, nursery: trio.Nursery) -> None:
        """Run the app's lifespan task in ``nursery`` and wait for its answer to startup.

        Raises AppStartError if the app answers ``lifespan.startup.failed``.
        """
        nursery.start_soon(self._run)
        answer = await self._exchange("lifespan.startup")
        if answer is None:
            return
        if answer.get("type") == "lifespan.startup.complete":
            return
        self._scope.cancel()  # the app is not going to serve: its lifespan task ends here
        if answer.get("type") == "lifespan.startup.failed":
            message = answer.get("message") or "(no message)"
            raise AppStartError(f"the app's lifespan startup failed: {message}")
        raise AppStartError(f"the app answered lifespan.startup with {answer.get('type')!r}")

    async def shutdown(self) -> None:
        """Tell the app, wait for its answer (shielded, bounded), then end the task."""
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
            answer = await self._exchange("lifespan.shutdown")
            if answer is not None and answer.get("type") == "lifespan.shutdown.failed":
                self._ctx.log(f"the app's lifespan shutdown failed: {answer.get('message')}")
        self._scope.cancel()

    async def _exchange(self, event: str) -> ASGIMessage | None:
        """Send ``event``; the app's answer, or None if the app has no lifespan (any more)."""
        if not self._supported:
            return None
        try:
            await self._to_app.send({"type": event})
            return await self._answers.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            self._supported = False
            return None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        with self._scope:
            try:
                await self._ctx.app(scope, self._receive, self._send)
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self._ctx.log(f"ASGI 'lifespan' protocol appears unsupported ({detail})")
            finally:
                self._answer.close()
                self._app_receives.close()

    async def _receive(self) -> ASGIMessage:
        return await self._app_receives.receive()

    async def _send(self, message: ASGIMessage) -> None:
        await self._answer.send(message)
