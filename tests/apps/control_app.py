"""Test app for the console and control tests: says when it is ready, prints every broadcast it
receives, and says whether it stopped gracefully (drained) or otherwise."""

from __future__ import annotations

import json

from stereo import Worker


async def serve(worker: Worker) -> None:
    messages = worker.messages()
    print("ready", flush=True)
    try:
        async for message in messages:
            print(
                f"received {json.dumps(message.data, sort_keys=True)} from {message.sender}",
                flush=True,
            )
    finally:
        if worker.stopping.is_set():
            print("stopped gracefully", flush=True)
