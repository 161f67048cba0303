"""Gather-writes: every byte, in order, across partial sends."""

from __future__ import annotations

import socket

import trio

from stereo._sockets import IOV_MAX, send_gathered


async def test_send_gathered_writes_every_chunk_in_order_through_partial_sends() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # force many partial sendmsg calls
    writer = trio.socket.from_stdlib_socket(a)
    reader = trio.socket.from_stdlib_socket(b)
    chunks = [bytes([i % 251]) * (i * 37 % 5000 + 1) for i in range(IOV_MAX + 300)]
    expected = b"".join(chunks)
    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_gathered, writer, chunks)
            while len(received) < len(expected):
                received += await reader.recv(65536)
    assert received == expected
    writer.close()
    reader.close()
