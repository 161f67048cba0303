"""Answer every HTTP request with the id of the worker that accepted the connection.

    stereo run whoami:serve -w 4 --bind 127.0.0.1:8000 --app-dir examples
    curl http://127.0.0.1:8000/          # worker 3 (pid 12345)

The master binds the socket once; every worker accepts on it. Run curl a few times (each run is a
new connection) and different workers answer: the kernel hands each connection to one of them.

The HTTP is the least that curl and browsers accept: read the request head, answer, close.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import trio

from stereo import Connection, Worker, exitcodes

MAX_HEAD = 16 * 1024
# A client gets this long to send its request head.
REQUEST_TIMEOUT = 10.0


async def read_head(stream: Connection) -> bytes | None:
    """The request head up to the blank line, or None if the client hung up or sent too much."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        data = await stream.receive_some(4096)
        if not data or len(head) + len(data) > MAX_HEAD:
            return None
        head += data
    return head


def response(status: str, body: str) -> bytes:
    payload = body.encode()
    return (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode() + payload


async def handle(worker: Worker, stream: Connection) -> None:
    async with stream:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                head = await read_head(stream)
                if head is None:
                    await stream.send_all(response("400 Bad Request", "bad request\n"))
                else:
                    await stream.send_all(
                        response("200 OK", f"worker {worker.id} (pid {os.getpid()})\n")
                    )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away


def require_socket(worker: Worker) -> None:
    if not worker.listeners:
        print("whoami needs a socket: run it with --bind HOST:PORT", file=sys.stderr, flush=True)
        # The app cannot work as started: exit with the code that marks the slot failed at once
        # instead of restarting it in a loop.
        raise SystemExit(exitcodes.APP_LOAD_ERROR)


async def serve(worker: Worker) -> None:
    require_socket(worker)
    print(f"whoami: worker {worker.id} ready", flush=True)
    await trio.serve_listeners(partial(handle, worker), worker.listeners)
