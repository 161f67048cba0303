"""A FastAPI app for the ASGI load and fault tests: every response names the worker, its pid and
the app VERSION; /slow takes SLOW seconds first (a request in flight during a drain)."""

import os
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import stereo

VERSION = os.environ.get("HTTPD_VERSION", "1")
SLOW = float(os.environ.get("SLOW", "0.2"))


@asynccontextmanager
async def lifespan(app):
    print(f"started pid={os.getpid()} version={VERSION}", flush=True)
    yield


app = FastAPI(lifespan=lifespan)


def whoami() -> str:
    return f"worker {stereo.current_worker().id} pid {os.getpid()} version {VERSION}\n"


@app.get("/", response_class=PlainTextResponse)
async def root() -> str:
    return whoami()


@app.get("/slow", response_class=PlainTextResponse)
async def slow() -> str:
    if os.environ.get("SLOW_SAYS"):
        print("slow request begins", flush=True)
    await anyio.sleep(SLOW)
    return whoami()


@app.get("/hang")
async def hang() -> None:
    print("hanging", flush=True)
    await anyio.sleep_forever()
