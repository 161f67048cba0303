"""The WELCOME map a worker or a pool process receives (docs/protocol.md): the settings it
needs, in one place, pure."""

from __future__ import annotations

import os
from typing import Any

from ..wire.protocol import PROTOCOL_VERSION
from .config import Settings


def worker_welcome(
    settings: Settings, slot_id: int, pool: str | None, listen_fds: list[int]
) -> dict[str, Any]:
    """For slot ``slot_id``: ``pool`` names its pool (None: a worker), ``listen_fds`` are the
    listening sockets it inherits (none for a pool process)."""
    s = settings
    return {
        "version": PROTOCOL_VERSION,
        "slot": slot_id,
        "pool": pool,  # a pool process's (docs/pool.md)
        "pools": sorted(s.pools),
        "app": s.app,
        "app_dir": os.path.abspath(s.app_dir),
        "listen_fds": listen_fds,
        "max_message_size": s.max_message_size,
        "outbox_limit": s.worker_outbox_limit,
        "inbox_limit": s.inbox_limit,
        "heartbeat_interval": s.heartbeat_interval,
        "interface": s.interface,
        "asgi": s.asgi,
    }
