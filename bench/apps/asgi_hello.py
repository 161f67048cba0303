"""The ASGI "hello" apps of the asgi workload, served alike by stereo, uvicorn and hypercorn.

``raw`` is a bare ASGI 3 callable (the server's own cost, nearly nothing of the app's);
``fastapi_app`` is a one-route FastAPI app (what most users would deploy). Both report
``@bench ready pid=...`` from lifespan startup, which every server here runs in each worker
before it serves, so the harness waits on that rather than polling the port.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ._spec import emit

Scope = dict[str, Any]
BODY = b"Hello, world"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def lifespan(receive: Any, send: Any) -> None:
    """The lifespan protocol by hand, for the raw apps: ready once startup is acknowledged."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            emit("ready", pid=os.getpid())
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def raw(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)


@asynccontextmanager
async def _ready(_: FastAPI) -> AsyncIterator[None]:
    emit("ready", pid=os.getpid())
    yield


fastapi_app = FastAPI(lifespan=_ready)


@fastapi_app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
