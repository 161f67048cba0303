"""Minimal HTTP/1.1 server for the load tests: every connection gets one answer naming the worker,
its pid and the app VERSION (tests rewrite a copy of this file to deploy a new version)."""

import os

import trio

VERSION = os.environ.get("HTTPD_VERSION", "1")


async def serve(worker):
    print(f"started pid={os.getpid()} version={VERSION}", flush=True)

    async def handler(stream):
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(4096)
            if not data:
                return
            head += data
        body = f"worker {worker.id} pid {os.getpid()} version {VERSION}\n".encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )

    await trio.serve_listeners(handler, worker.listeners)
