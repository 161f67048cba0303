"""HTTP/1.1 end to end: the real ``stereo run`` serving a FastAPI app with two workers, over
real sockets (tests/apps/asgi_e2e.py)."""

from __future__ import annotations

import json

import trio
from conftest import open_stereo

ARGS = (
    "asgi_e2e:app", "-w", "2", "--bind", "127.0.0.1:0",
    "--max-body-size", "1000", "--max-header-size", "2048",
)  # fmt: skip


def get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: e2e", *headers, "", ""]).encode()


async def responses(
    stream: trio.SocketStream, count: int
) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` Content-Length responses read off ``stream``, then whatever ends it."""
    data = b""
    out = []
    with trio.fail_after(10):
        while len(out) < count:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed after {len(out)} responses: {data!r}"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            line, *fields = head.decode().split("\r\n")
            headers = {k.lower(): v for k, _, v in (f.partition(": ") for f in fields)}
            length = int(headers["content-length"])
            while len(data) < length:
                chunk = await stream.receive_some(65536)
                assert chunk
                data += chunk
            out.append((int(line.split()[1]), headers, data[:length]))
            data = data[length:]
    return out


async def closed(stream: trio.SocketStream) -> None:
    with trio.fail_after(10):
        assert await stream.receive_some(65536) == b""


async def test_fastapi_json_pipelining_limits_and_app_errors() -> None:
    async with open_stereo(*ARGS) as stereo:
        address = await stereo.address()
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            # A JSON route, and three requests in one write answered in order on one worker.
            post = b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: 5\r\n\r\nhello"
            await stream.send_all(get("/items/1?q=a") + post + get("/items/3"))
            (s1, h1, b1), (s2, _, b2), (s3, _, b3) = await responses(stream, 3)
            assert (s1, s2, s3) == (200, 200, 200)
            assert h1["content-type"] == "application/json" and h1["server"] == "stereo"
            first, third = json.loads(b1), json.loads(b3)
            assert (first["item"], first["q"], third["item"], third["q"]) == (1, "a", 3, "")
            assert first["worker"] == third["worker"] in (1, 2)
            assert json.loads(b2) == {"length": 5, "body": "hello"}

        # The app raises (Starlette has sent its own 500 first): the connection ends, the
        # traceback is in the worker's output, and the worker serves on.
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(get("/boom") + get("/items/1"))
            [(status, _, _)] = await responses(stream, 1)
            assert status == 500
            await closed(stream)
        await stereo.wait_for(r"^\[worker [12]\] RuntimeError: boom from the app$")

        # Limits: 413 and 431, each explained, then the connection ends.
        for request, status, words in (
            (b"POST /echo HTTP/1.1\r\nHost: e2e\r\nContent-Length: 1001\r\n\r\n", 413,
             b"--max-body-size"),
            (get("/items/1", "X-Big: " + "a" * 3000), 431, b"--max-header-size"),
        ):  # fmt: skip
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                await stream.send_all(get("/items/2") + request)
                [(ok, _, _), (refused, headers, body)] = await responses(stream, 2)
                assert ok == 200 and refused == status and words in body
                assert headers["connection"] == "close"
                await closed(stream)

        # Both workers answer, and each logs its access lines.
        seen: set[int] = set()
        with trio.fail_after(20):
            while seen != {1, 2}:
                stream = await trio.open_tcp_stream(*address)
                async with stream:
                    await stream.send_all(get("/items/9", "Connection: close"))
                    [(_, _, body)] = await responses(stream, 1)
                    seen.add(json.loads(body)["worker"])
        await stereo.wait_for(r'^\[worker [12]\] 127\.0\.0\.1:\d+ - "GET /items/9 HTTP/1\.1" 200$')
