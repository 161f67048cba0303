"""The WebSocket fan-out app of the asgi workload, one body for every server.

``/pub``: each text message received is published on the run's channel. ``/sub``: every message
published on the channel is sent on. Either path first sends ``hello <pid>``, after subscribing
for ``/sub``, so the load generator knows which worker process it landed on and can reconnect
until its receivers are spread over all of them.

The publish/subscribe side is anything shaped like encode/broadcaster's ``Broadcast``
(``publish(channel, message)``, ``async with subscribe(channel) as sub: async for event in sub``),
which ``stereo.publish``/``stereo.subscribe`` mirror: the two legs differ only in that object
(ws_stereo.py, ws_broadcaster.py). The app uses anyio, so it runs unchanged on trio and asyncio.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio

from ._spec import CHANNEL_ENV, emit

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Topics(Protocol):
    async def publish(self, channel: str, message: Any) -> None: ...

    # Any: broadcaster's Subscriber is async-iterable at run time but not typed as such.
    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Any]: ...


def make_app(
    topics: Topics,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> ASGIApp:
    channel = os.environ[CHANNEL_ENV]  # unique per run: the Redis server may be shared
    hello = f"hello {os.getpid()}"

    async def publisher(receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": hello})
        publish = topics.publish
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await publish(channel, message["text"])

    async def subscriber(receive: Any, send: Any) -> None:
        async with topics.subscribe(channel) as events, anyio.create_task_group() as tasks:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                tasks.cancel_scope.cancel()

            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": hello})
            tasks.start_soon(until_disconnect)
            try:
                async for event in events:
                    await send({"type": "websocket.send", "text": event.message})
            except OSError:
                pass  # the client left while we sent (uvicorn's ClientDisconnected is one)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            if scope["path"] == "/pub":
                await publisher(receive, send)
            else:
                await subscriber(receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if startup is not None:
                        await startup()
                    await send({"type": "lifespan.startup.complete"})
                    emit("ready", pid=os.getpid())
                elif message["type"] == "lifespan.shutdown":
                    if shutdown is not None:
                        await shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app
