"""A raw ASGI app whose lifespan does what LIFESPAN says: "ok" (startup puts a token in the
state, shutdown prints it), "fail" (answers startup.failed), "none" (raises: no lifespan)."""

import os

MODE = os.environ.get("LIFESPAN", "ok")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        if MODE == "none":
            raise RuntimeError("no lifespan here")
        if MODE == "fail":
            await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
            return
        scope["state"]["token"] = f"token-{os.getpid()}"
        await send({"type": "lifespan.startup.complete"})
        print("started", flush=True)
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        print(f"shutdown with {scope['state']['token']}", flush=True)
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = scope.get("state", {}).get("token", "no state").encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
