"""WebSocket sessions (placeholder until the wsproto driver lands): refuse the upgrade."""

from __future__ import annotations

from typing import Any

from .context import ServerContext
from .scope import Address, RequestHead


async def serve_websocket(
    stream: Any,
    head: RequestHead,
    leftover: bytes,
    ctx: ServerContext,
    client: Address | None,
    server: Address | None,
) -> None:
    body = b"WebSocket is not supported yet\n"
    await stream.send_all(
        b"HTTP/1.1 501 Not Implemented\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )
