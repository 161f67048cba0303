"""WebSockets through the real ``stereo run``: a FastAPI app on two workers, reached over TCP by
the test client (tests/wsclient.py); a graceful stop closes sessions with 1012."""

from __future__ import annotations

import signal

import trio
from conftest import open_stereo
from wsclient import connect


async def test_echo_over_a_real_socket_and_sigterm_closes_1012() -> None:
    async with open_stereo("ws_app:app", "-w", "2", "--bind", "127.0.0.1:0") as stereo:
        with trio.fail_after(60):
            host, port = await stereo.address()
            await stereo.wait_for(r"^\[worker [12]\] started$", count=2)
            async with connect(host, port, "/echo") as first, connect(host, port, "/echo") as kept:
                await first.send_text("hello")
                assert str(await first.receive()).startswith("hello from ")
                assert await first.close() == (1000, "")
                await kept.send_text("still there?")
                assert str(await kept.receive()).startswith("still there? from ")
                stereo.signal(signal.SIGTERM)
                assert await kept.wait_closed() == (1012, "service restart")
            await stereo.wait_for(r"ws disconnect 1012")
            assert await stereo.wait() == 0
