"""The connection of the JetStream adapter (:mod:`.jetstream`) to its stream, under asyncio:
one nats-py client, made on first use, checked to have the stream (created if absent, refused
if incompatible), and dropped on any error or timeout, so that the next call connects again.

Connections do not reconnect behind the adapter's back (a publish buffered during a reconnect
would be sent later, unseen): any connection error or timeout drops the client and raises
BrokerUnavailable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamInfo as _StreamInfo

from ..urls import redact
from .broker import BrokerUnavailable
from .jetstream_stream import (
    StreamMismatch,
    republishes,
    stream_config,
    stream_config_problems,
)


class StreamLink:
    """The client of one adapter and the stream it works on (the adapter's base class)."""

    def __init__(
        self,
        url: str,
        names: tuple[str, str, str],
        retention: int,
        timeout: float,
        window: float,
    ) -> None:
        self.url = url
        # The stream, its subjects, and where it republishes what it stored.
        self.stream, self.subject, self.stored_subject = names
        self.retention = retention
        self.timeout = timeout
        self.duplicate_window = window
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._direct = True  # the stream answers direct gets (any replica, no API round)
        self._republished = True  # the stream republishes its entries on stored_subject
        self._closing: set[asyncio.Task[None]] = set()

    def _dropped(self) -> None:
        """What the adapter knew through the dropped connection, forgotten (a hook)."""

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Translate the client's ways of saying "no broker now" into BrokerUnavailable, and
        drop the client so the next call starts from a fresh connection."""
        try:
            yield
        except (nats.js.errors.ServiceUnavailableError, nats.js.errors.ServerError) as exc:
            self._drop()
            raise BrokerUnavailable(f"{redact(self.url)}: JetStream unavailable ({exc})") from exc
        except nats.js.errors.Error:
            raise  # an answer from the server, handled (or not) by the caller
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._drop()
            raise BrokerUnavailable(
                f"{redact(self.url)}: {type(exc).__name__} {exc}".rstrip()
            ) from exc

    def _drop(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._dropped()
        if nc is not None and not nc.is_closed:
            # Closing flushes; on a dead link that waits, and nobody needs the result.
            task = asyncio.get_running_loop().create_task(self._close_quietly(nc))
            self._closing.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, nc: Client) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await nc.close()

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js
        self._drop()

        async def quiet(exc: Exception) -> None:
            # Errors surface as exceptions from the calls; the default callback would log each.
            pass

        with self._unavailable():
            async with asyncio.timeout(self.timeout):
                nc = await nats.connect(
                    self.url,
                    allow_reconnect=False,
                    connect_timeout=max(1, round(self.timeout)),
                    error_cb=quiet,
                )
        js = nc.jetstream(timeout=self.timeout)
        try:
            with self._unavailable():
                await self._ensure_stream(js)
        except BaseException:
            # Kept only once the stream is known good, so the next call checks it again.
            await self._close_quietly(nc)
            raise
        self._nc, self._js = nc, js
        return js

    async def _ensure_stream(self, js: JetStreamContext) -> _StreamInfo:
        """The stream's info, creating it if absent (idempotent: several hubs may race)."""
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            window, stored = self.duplicate_window, self.stored_subject
            config = stream_config(self.stream, self.subject, self.retention, window, stored)
            try:
                info = await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                info = await js.stream_info(self.stream)  # another hub created it first
        problems = stream_config_problems(info.config, self.subject, self.retention)
        if problems:
            raise StreamMismatch(f"stream {self.stream}: " + "; ".join(problems))
        self._direct = bool(info.config.allow_direct)
        self._republished = republishes(info.config, self.subject, self.stored_subject)
        return info

    async def aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await self._close_quietly(nc)
        if self._closing:
            await asyncio.gather(*self._closing)
