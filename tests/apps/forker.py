"""Starts long-lived child processes the way a shell or a non-Python launcher would, keeping every
descriptor that may be inherited (``close_fds=False``): one while the app is imported, one from
``serve()``. Prints both pids, then serves TCP like pids.py."""

import os
import subprocess
import sys

import trio


def start_child():
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        close_fds=False,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


AT_IMPORT = start_child()


async def serve(worker):
    in_serve = start_child()
    print(f"started pid={os.getpid()} children={AT_IMPORT.pid},{in_serve.pid}", flush=True)

    async def handler(stream):
        await stream.send_all(f"worker {worker.id}\n".encode())

    await trio.serve_listeners(handler, worker.listeners)
