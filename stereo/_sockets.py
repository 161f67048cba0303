"""Socket writing shared by the master's relay and the worker's hub writer."""

from __future__ import annotations

import trio

JOIN_LIMIT = 64 * 1024  # below this, one joined copy is cheaper than a scatter/gather write
IOV_MAX = 1024  # Linux's limit on buffers per sendmsg


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
