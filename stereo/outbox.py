"""Socket writing shared by the master's relay and the worker's hub writer."""

from __future__ import annotations

import trio

JOIN_LIMIT = 64 * 1024  # below this, one joined copy is cheaper than a scatter/gather write
# Chunks smaller than this on average are joined whatever the total: an iovec (and a memoryview)
# per 100-byte frame costs more than copying it.
GATHER_ABOVE = 16 * 1024
IOV_MAX = 1024  # Linux's limit on buffers per sendmsg


async def send_chunks(stream: trio.SocketStream, chunks: list[bytes]) -> int:
    """Write ``chunks`` in order, copying small ones into one buffer and gather-writing big ones
    (shared buffers, such as a relayed run, are not copied once per receiver). Returns the size.
    """
    if len(chunks) == 1:
        await stream.send_all(chunks[0])
        return len(chunks[0])
    size = sum(map(len, chunks))
    if size <= JOIN_LIMIT or size < GATHER_ABOVE * len(chunks):
        await stream.send_all(b"".join(chunks))
    else:
        await send_gathered(stream.socket, chunks)
    return size


async def send_gathered(sock: trio.socket.SocketType, chunks: list[bytes]) -> None:
    """Write every chunk, in order, with as few sendmsg calls as the kernel allows."""
    views = [memoryview(chunk) for chunk in chunks]
    first = 0
    while first < len(views):
        sent = await sock.sendmsg(views[first : first + IOV_MAX])
        while sent:
            head = views[first]
            if sent >= len(head):
                sent -= len(head)
                first += 1
            else:
                views[first] = head[sent:]
                sent = 0
