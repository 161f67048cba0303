"""Gather-writes: every byte, in order, across partial sends."""

from __future__ import annotations

import socket

import pytest
import trio

from stereo.outbox import IOV_MAX, send_chunks, send_gathered


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


SMALL = [bytes([i % 251]) * 100 for i in range(3000)]  # joined: 300 KB of 100-byte frames
BIG = [bytes([i]) * 200_000 for i in range(3)]  # gathered: no copy


@pytest.mark.parametrize(
    "chunks", [SMALL, BIG, [b"one"], SMALL[:5] + BIG[:1]], ids=["small", "big", "one", "mixed"]
)
async def test_send_chunks_writes_every_byte_in_order(chunks: list[bytes]) -> None:
    a, b = socket.socketpair()
    with a, b:
        writer = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        reader = trio.socket.from_stdlib_socket(b)
        expected = b"".join(chunks)
        received = bytearray()
        sizes: list[int] = []

        async def write() -> None:
            sizes.append(await send_chunks(writer, chunks))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                while len(received) < len(expected):
                    received += await reader.recv(65536)
        assert received == expected
        assert sizes == [len(expected)]
