"""A FastAPI app with WebSockets, for the end-to-end tests against ``stereo run``: /echo echoes
text and prints how the client left (the master prefixes worker output with the slot)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    print("started", flush=True)
    yield


app = FastAPI(lifespan=lifespan)


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{text} from {os.getpid()}")
    except WebSocketDisconnect as exc:
        print(f"ws disconnect {exc.code}", flush=True)
