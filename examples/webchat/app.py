"""A browser chat across workers: a FastAPI app on stereo's ASGI front end.

    stereo run app:app -w 4 --bind 127.0.0.1:8000 --app-dir examples/webchat
    # open http://127.0.0.1:8000/ in two or more tabs; type lines

Every worker serves the same app on the shared socket; each tab's WebSocket is accepted by one of
them, and the page says which. A line is published on the "chat" topic with
``stereo.publish``; every connection, on every worker, forwards what its ``stereo.subscribe``
yields, so every tab sees the conversation in the one hub order.

A tab that stops reading never slows the others: its subscription is cut off alone
(``stereo.SubscriberCutOff``) and its WebSocket closed with 1013 (try again later), after the
events it was still owed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

import stereo

CHANNEL = "chat"
MAX_LINE = 1000  # characters; longer lines are cut, not refused
TRY_AGAIN_LATER = 1013  # RFC 6455 close code: the server is overloaded (here, for this client)
PAGE = (Path(__file__).parent / "static" / "index.html").read_text()

# Names are "w<worker>.<n>": unique among the live connections of every worker.
_numbers = itertools.count(1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    print(f"webchat: worker {stereo.current_worker().id} ready", flush=True)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return PAGE


@app.websocket("/ws")
async def chat(websocket: WebSocket) -> None:
    worker = stereo.current_worker()
    name = f"w{worker.id}.{next(_numbers)}"
    await websocket.accept()
    # Subscribed before the welcome: a client that has seen it will see every later line.
    async with stereo.subscribe(CHANNEL) as subscription:
        welcome = {"type": "welcome", "worker": worker.id, "pid": os.getpid(), "name": name}
        try:
            await websocket.send_json(welcome)
        except WebSocketDisconnect:
            return  # gone already
        # Two directions, two tasks; whichever ends first (the client left, or its
        # subscription was cut off) ends the other.
        async with anyio.create_task_group() as tasks:

            async def forward() -> None:
                await forward_lines(websocket, subscription)
                tasks.cancel_scope.cancel()

            tasks.start_soon(forward)
            await publish_lines(websocket, name)
            tasks.cancel_scope.cancel()


async def publish_lines(websocket: WebSocket, name: str) -> None:
    """Publish each text line the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = (message.get("text") or "").strip()[:MAX_LINE]  # binary frames are ignored
        if text:
            await stereo.publish(CHANNEL, {"name": name, "text": text})


async def forward_lines(websocket: WebSocket, subscription: stereo.Subscription) -> None:
    """Send the client every chat line; close with 1013 if it fell too far behind."""
    try:
        async for event in subscription:
            line: Any = event.message
            if isinstance(line, Mapping):  # anything else on the channel is not a chat line
                await websocket.send_json(
                    {
                        "type": "line",
                        "seq": event.seq,
                        "name": str(line.get("name")),
                        "worker": event.sender,  # the worker that published it
                        "text": str(line.get("text")),
                    }
                )
    except stereo.SubscriberCutOff:
        with suppress(WebSocketDisconnect):
            await websocket.close(TRY_AGAIN_LATER, "too far behind the chat; reconnect")
    except WebSocketDisconnect:
        pass  # the client went away while we wrote to it
