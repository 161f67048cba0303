"""The broker bridge's process, supervised by the master (docs/scale-out.md).

The master starts ``python -m stereo.bridge`` with its end of a hub connection, as it starts a
worker, and restarts it whenever it exits: the broker client (and its failures) live there, and
the master only routes frames (:meth:`Hub.serve_bridge`). The process writes its own lines,
prefixed ``[bridge]``, to the master's stdout and stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .. import exitcodes
from ..urls import redact
from ..wire.protocol import PROTOCOL_VERSION
from .config import Settings
from .hub import Hub
from .peer import Peer
from .privileges import SpawnOptions
from .process import hub_socketpair, start_on_hub
from .upstream import Upstream

RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # after quick exits in a row; then every 5 s
QUICK_EXIT = 10.0  # a bridge that ran longer than this starts the delays over


class BridgeEvents:
    """The bridge peer's control frames (Hub.PeerEvents)."""

    def __init__(self, settings: Settings, upstream: Upstream, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.upstream = upstream
        self.log = log

    def welcome(self) -> dict[str, Any]:
        s = self.settings
        return {
            "version": PROTOCOL_VERSION,
            "role": "bridge",
            "url": s.bridge,
            "name": s.bridge_name,
            "timeout": s.bridge_timeout,
            "retention": s.bridge_retention,
            "max_message_size": s.max_message_size,
            **self.upstream.welcome(),
        }

    def ready(self) -> None:
        shown = redact(self.settings.bridge or "")
        self.log(f"bridge connected to {shown} as {self.settings.bridge_name!r}")

    def heartbeat(self) -> None:
        pass

    def boot_error(self, reason: str) -> None:
        self.log(f"bridge cannot start: {reason}")


async def run_bridge(
    hub: Hub,
    settings: Settings,
    log: Callable[[str], None],
    handshake_timeout: float,
    spawn: SpawnOptions,
) -> None:
    """Keep one bridge process running until cancelled (the master's teardown)."""
    assert hub.upstream is not None
    events = BridgeEvents(settings, hub.upstream, log)
    quick_exits = 0
    while True:
        started = trio.current_time()
        code = await _run_once(hub, settings, events, handshake_timeout, spawn)
        quick_exits = quick_exits + 1 if trio.current_time() - started < QUICK_EXIT else 0
        delay = RESTART_DELAYS[min(quick_exits, len(RESTART_DELAYS)) - 1] if quick_exits else 0.1
        log(f"bridge exited: {exitcodes.describe(code)}; restarting in {delay:g} s")
        await trio.sleep(delay)
        hub.upstream.restarts += 1


async def _run_once(
    hub: Hub,
    settings: Settings,
    events: BridgeEvents,
    handshake_timeout: float,
    spawn: SpawnOptions,
) -> int:
    parent, child = hub_socketpair()
    try:
        async with trio.open_nursery() as nursery:
            process = await start_on_hub(
                nursery, "stereo.bridge", child, capture=False, spawn=spawn
            )
            child.close()
            peer = Peer(0, parent, settings.max_message_size, events)
            nursery.start_soon(hub.serve_bridge, peer, handshake_timeout)
            code = await process.wait()
            with trio.move_on_after(1.0):
                await peer.ended.wait()  # what it sent before exiting is read
            peer.stream.socket.close()
            return code
    finally:
        child.close()
        parent.close()
