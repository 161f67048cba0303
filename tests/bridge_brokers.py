"""The private brokers of the bridge fault tests, behind one interface: a redis-server or a
nats-server -js that a test stops, restarts (with or without its store) and pauses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import pytest
import trio
from test_bridge_jetstream import NATS_SERVER, NatsServer
from test_bridge_redis import RedisServer, needs_redis

needs_nats = pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="no nats-server")
REDIS = pytest.param("redis", marks=needs_redis)
NATS = pytest.param("nats", marks=needs_nats)


class Broker(Protocol):
    """A private broker a test stops, restarts and pauses."""

    kind: str
    # The RESET reason once the broker is back without the stream the hubs were reading.
    recreated: str
    # The RESET reason of a hub whose position was trimmed away.
    trimmed: str

    @property
    def url(self) -> str: ...

    async def stop(self) -> None: ...

    async def start(self) -> None:
        """Again after a stop, on the same port (and with its store, if it keeps one)."""
        ...

    def wipe(self) -> None:
        """Lose the store (the next start is a fresh disk)."""
        ...

    def signal(self, signum: int) -> None: ...


class RedisBroker:
    """redis-server without persistence: every restart comes back empty."""

    kind = "redis"
    recreated = r"gap: .*recreated"
    trimmed = r"gap: .*missing"  # the entries after the position are gone, so it is behind

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            await self.server.stop()

    async def start(self) -> None:
        with trio.fail_after(15):
            await self.server.start(self.server.port or None)

    def wipe(self) -> None:
        pass

    def signal(self, signum: int) -> None:
        self.server.signal(signum)


class NatsBroker:
    """nats-server -js with its store on disk: a restart keeps the stream unless wiped."""

    kind = "nats"
    # The stream missing (nothing appended yet) or another one (an appender recreated it).
    recreated = r"gap: .*(recreated|is gone)"
    trimmed = r"gap: .*trimmed"

    def __init__(self, server: NatsServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        # Its start and stop block for at most 10 s each: in a thread, off the test's loop.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.server.stop)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.server.start)

    def wipe(self) -> None:
        self.server.wipe()

    def signal(self, signum: int) -> None:
        self.server.signal(signum)


@asynccontextmanager
async def open_broker(
    kind: str, tmp_path: Path, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()
) -> AsyncIterator[Broker]:
    """A private broker of ``kind`` bound to ``host`` (never the shared 6379 and 4222), on a
    free port; on a fixed one where ``prefix`` puts it in a namespace of its own."""
    own_namespace = bool(prefix)
    broker: Broker
    if kind == "redis":
        redis = RedisServer(tmp_path, host=host, prefix=prefix)
        redis.port = 6390 if own_namespace else 0
        broker = RedisBroker(redis)
    else:
        nats = NatsServer(tmp_path / "js", host=host, prefix=prefix)
        nats.port = 4290 if own_namespace else -1
        broker = NatsBroker(nats)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
