"""A FastAPI app for the HTTP end-to-end tests: a JSON route, a body echo and a route that
raises."""

from fastapi import FastAPI, Request

import stereo

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = "") -> dict[str, object]:
    return {"item": item_id, "q": q, "worker": stereo.current_worker().id}


@app.post("/echo")
async def echo(request: Request) -> dict[str, object]:
    body = await request.body()
    return {"length": len(body), "body": body.decode()}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom from the app")
