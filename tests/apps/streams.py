"""Test app for logging: one line to stdout and one to stderr at start, both again for every
broadcast, and a last line when it drains."""

from __future__ import annotations

import os
import sys

from stereo import Worker


async def serve(worker: Worker) -> None:
    messages = worker.messages()
    print(f"ready pid={os.getpid()}", flush=True)
    print(f"to stderr pid={os.getpid()}", file=sys.stderr, flush=True)
    try:
        async for message in messages:
            print(f"out {message.data}", flush=True)
            print(f"err {message.data}", file=sys.stderr, flush=True)
    finally:
        if worker.stopping.is_set():
            print("stopped gracefully", flush=True)
