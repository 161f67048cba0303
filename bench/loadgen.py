"""A minimal HTTP/1.1 keep-alive load generator, the fallback when wrk is not installed.

``python -m bench.loadgen PORT CONNECTIONS SECONDS`` prints ``{"rps": ..., "errors": ...}``.
It only understands the serving workload's fixed response (headers, then a 2-byte body).
"""

from __future__ import annotations

import json
import sys

import trio

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
RESPONSE_END = b"\r\n\r\nok"


async def _client(port: int, counts: list[int], errors: list[str]) -> None:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError as exc:
        errors.append(f"connect: {exc}")
        return
    async with stream:
        buffer = b""
        while True:
            await stream.send_all(REQUEST)
            while RESPONSE_END not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    errors.append("server closed a connection")
                    return
                buffer += data
            buffer = buffer[buffer.index(RESPONSE_END) + len(RESPONSE_END) :]
            counts[0] += 1


async def main(port: int, connections: int, seconds: float) -> None:
    counts = [0]
    errors: list[str] = []
    start = trio.current_time()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(_client, port, counts, errors)
    elapsed = trio.current_time() - start
    print(json.dumps({"rps": counts[0] / elapsed, "errors": "; ".join(sorted(set(errors)))}))


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
