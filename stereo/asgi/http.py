"""Placeholder until the HTTP/1.1 driver lands (answers 501)."""

from __future__ import annotations

from typing import Any

from .context import ServerContext

_NOT_YET = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


async def serve_connection(stream: Any, ctx: ServerContext) -> None:
    await stream.receive_some(65536)
    await stream.send_all(_NOT_YET)


async def refuse_busy(stream: Any) -> None:
    await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
