"""The minimal HTTP/1.1 keep-alive handler of the serving workload, shared by both of its legs.

It answers every request (GET without a body, which is all wrk sends) with a fixed 200 that names
the worker in ``X-Worker``, and counts requests per worker. The count is written to
``$STEREO_BENCH_SERVE_DIR/serve-<id>.json`` every quarter second and on the way out, so the
harness can read each worker's share after stopping the server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

DIR_ENV = "STEREO_BENCH_SERVE_DIR"
END_OF_HEAD = b"\r\n\r\n"
WRITE_EVERY = 0.25


class Counter:
    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.requests = 0
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"X-Worker: %d\r\n\r\nok" % worker_id
        )
        self._path = Path(os.environ[DIR_ENV]) / f"serve-{worker_id}.json"

    def write(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"id": self.worker_id, "requests": self.requests}))
        tmp.replace(self._path)

    async def write_periodically(self) -> None:
        try:
            while True:
                await trio.sleep(WRITE_EVERY)
                self.write()
        finally:
            self.write()


async def handle(stream: trio.abc.Stream, counter: Counter) -> None:
    buffer = b""
    try:
        while data := await stream.receive_some(65536):
            buffer += data
            n = buffer.count(END_OF_HEAD)
            if n:
                # Pipelined requests (none from wrk by default) get their answers in one write.
                buffer = buffer[buffer.rindex(END_OF_HEAD) + len(END_OF_HEAD) :]
                counter.requests += n
                await stream.send_all(counter.response * n)
    except trio.BrokenResourceError:
        pass  # the load generator hung up mid-request at the end of its run
    finally:
        await trio.aclose_forcefully(stream)
