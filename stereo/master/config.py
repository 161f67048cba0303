"""Settings of a running master, filled in by the CLI (or by a test, or an embedding program)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..checks import check_seconds, check_whole, split_app_target
from ..errors import ConfigError
from ..logs import LOG_FORMATS, LOG_LEVELS
from ..wire.protocol import (
    BROADCAST_HEADER_SIZE,
    DEFAULT_INBOX_LIMIT,
    DEFAULT_MAX_MESSAGE_SIZE,
    LARGEST_MESSAGE_SIZE,
)
from .binds import Bind
from .pools import check_pools
from .privileges import SpawnOptions, check_umask, resolve_identity

DEFAULT_OUTBOX_LIMIT = 64 * 1024 * 1024
DEFAULT_WORKER_OUTBOX_LIMIT = 4 * 1024 * 1024
DEFAULT_GRACEFUL_TIMEOUT = 30.0
DEFAULT_TIMEOUT = 30.0
# Slots at once (draining ones included): a typo such as `add 100000000` is refused, not run.
DEFAULT_MAX_WORKERS = 1024
MAX_WORKERS_CEILING = 65536  # the largest --max-workers
# A worker's HELLO (and its report of a boot error) travel under --max-message-size too: below
# this, every worker would be cut off in its handshake.
MIN_MAX_MESSAGE_SIZE = 1024
MIN_TIMEOUT = 0.2  # four heartbeats per --timeout at their fastest (every 0.05 s)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(slots=True)
class Settings:
    app: str
    app_dir: str = "."
    workers: int = field(default_factory=default_workers)
    # The most worker slots at once (draining ones included), for -w, add, scale and SIGTTIN.
    max_workers: int = DEFAULT_MAX_WORKERS
    binds: list[Bind] = field(default_factory=list)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Bytes the master may hold for one worker before cutting it off as a slow consumer.
    outbox_limit: int = DEFAULT_OUTBOX_LIMIT
    # Bytes of received broadcasts one message iterator of a worker may hold before the worker
    # stops reading its hub connection (WELCOME's inbox_limit).
    inbox_limit: int = DEFAULT_INBOX_LIMIT
    # Bytes a worker may queue for the master before broadcast() waits.
    worker_outbox_limit: int = DEFAULT_WORKER_OUTBOX_LIMIT
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    # A ready worker whose loop sends no heartbeat for this long is killed and replaced.
    timeout: float = DEFAULT_TIMEOUT
    # One SO_REUSEPORT listening socket per worker slot for TCP binds, instead of one shared.
    reuse_port: bool = False
    control_path: str | None = None
    console: bool = False
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    backoff_limit: int = 5
    # A crash within this many seconds of a start counts towards the failure limit.
    quick_exit: float = 2.0
    # What the app is (auto, serve, asgi) and the ASGI front end's options: decided and checked
    # by the worker and the CLI; the master only passes them on in WELCOME.
    interface: str = "auto"
    asgi: dict[str, Any] = field(default_factory=dict)
    # The broker bridge (docs/scale-out.md): None, redis://HOST:PORT/DB or nats://HOST:PORT.
    bridge: str | None = None
    bridge_name: str = "stereo"
    bridge_timeout: float = 30.0
    bridge_retention: int = 1_000_000  # entries (batches) the broker keeps
    # Operations (docs/operations.md): who the workers run as, where, with what umask; the pid
    # file; reloading on code changes (reload_dirs empty: the app dir).
    user: str | None = None
    group: str | None = None
    chdir: str | None = None
    umask: int | None = None
    pid_file: str | None = None
    # --metrics/--dashboard (docs/observability.md): the helper's arguments (empty: none is
    # started) and the dashboard's token, handed over in its environment, not its argv.
    observer: tuple[str, ...] = ()
    observer_token: str | None = None
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    reload_include: list[str] = field(default_factory=list)
    reload_exclude: list[str] = field(default_factory=list)
    # Logging (docs/logging.md): the master's own lines at this level and up; everything to
    # this file instead of the terminal (reopened on SIGUSR1); "text" or "json" lines.
    log_level: str = "info"
    log_file: str | None = None
    log_format: str = "text"
    # The job pool (docs/pool.md): pool name -> pool processes (--pool N, --pool NAME=N).
    pools: dict[str, int] = field(default_factory=dict)

    @property
    def heartbeat_interval(self) -> float:
        # Each heartbeat wakes the master; at the default --timeout of 30 s, one every 5 s keeps
        # an idle master near 0.03 % CPU (every 1 s it was 0.11 %) and still gives the watchdog
        # six beats per timeout.
        return max(0.05, min(5.0, self.timeout / 4))

    def check(self) -> None:
        """Raise ConfigError, naming the option, for the first setting out of its range (NaN,
        infinities and bools included): the master must refuse them before it starts, not
        trip on them later."""
        split_app_target(self.app)
        check_whole("--max-workers", self.max_workers, 1, MAX_WORKERS_CEILING)
        check_whole("--workers", self.workers, 0, self.max_workers, "--max-workers")
        check_pools(self.pools, self.max_workers - self.workers)
        check_whole(
            "--max-message-size",
            self.max_message_size,
            MIN_MAX_MESSAGE_SIZE,
            LARGEST_MESSAGE_SIZE,
        )
        check_whole(
            "--outbox-limit",
            self.outbox_limit,
            self.max_message_size + BROADCAST_HEADER_SIZE,
            None,
            "one broadcast of --max-message-size",
        )
        check_whole(
            "--inbox-limit",
            self.inbox_limit,
            self.max_message_size + BROADCAST_HEADER_SIZE,
            None,
            "one broadcast of --max-message-size",
        )
        check_seconds("--graceful-timeout", self.graceful_timeout)
        check_seconds("--timeout", self.timeout, MIN_TIMEOUT)
        if self.bridge is not None:
            if not self.bridge.startswith(("redis://", "nats://")):
                raise ConfigError(
                    f"--bridge {self.bridge!r}: must be redis://HOST:PORT/DB or nats://HOST:PORT"
                )
            check_seconds("--bridge-timeout", self.bridge_timeout)
            check_whole("--bridge-retention", self.bridge_retention, 1, None)
            if not self.bridge_name or not self.bridge_name.isprintable():
                raise ConfigError(f"--bridge-name {self.bridge_name!r}: must be printable text")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level {self.log_level!r}: must be one of {', '.join(LOG_LEVELS)}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format {self.log_format!r}: must be text or json")
        if self.interface not in ("auto", "serve", "asgi"):
            raise ConfigError(f"--interface {self.interface!r}: must be auto, serve or asgi")
        self.spawn_options()  # the user and group exist, we may switch to them, the umask is one

    def spawn_options(self) -> SpawnOptions:
        """Who the workers and the bridge run as, and their umask; ConfigError if impossible."""
        check_umask(self.umask)
        return SpawnOptions(resolve_identity(self.user, self.group), self.umask)

    def watched_dirs(self) -> list[str]:
        """--reload-dir, else the app dir; ConfigError for one that is not a directory (relative
        ones are taken from the working directory: check after --chdir)."""
        dirs = self.reload_dirs or [self.app_dir]
        for directory in dirs:
            if not os.path.isdir(directory):
                raise ConfigError(f"--reload-dir {directory}: not a directory")
        return dirs
