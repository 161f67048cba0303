"""The ASGI front end's options: filled in by the CLI, carried to each worker in WELCOME.

The master does not read them (it stays dumb about HTTP); :meth:`AsgiSettings.check` runs in the
CLI before anything is bound, and the worker rebuilds the object with :meth:`from_map`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..checks import check_seconds, check_whole
from ..errors import ConfigError

INTERFACES = ("auto", "asgi", "serve")
HTTP_PARSERS = ("auto", "httptools", "h11")

DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")  # as uvicorn: only a proxy on this host
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0  # uvicorn's default
DEFAULT_WS_MAX_SIZE = 16 * 1024 * 1024  # uvicorn's default
# Request line plus headers: past it, 431. nginx allows 4 x 8 KiB buffers, gunicorn about 800 KiB
# in all (100 fields of 8 KiB); 64 KiB serves every real browser and client.
DEFAULT_MAX_HEADER_SIZE = 64 * 1024
# A request body past it gets 413. uvicorn sets none; a bound is the safer default for a server
# facing the network, and uploads larger than this are rare enough to ask for it.
DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AsgiSettings:
    root_path: str = ""
    # Trust X-Forwarded-Proto / X-Forwarded-For from these client addresses ("*": from any).
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE
    # Concurrent connections per worker past which new ones get 503 (None: no limit).
    limit_concurrency: int | None = None
    ws_max_size: int = DEFAULT_WS_MAX_SIZE
    access_log: bool = True
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    http: str = "auto"  # which HTTP/1.1 parser: httptools where installed, else h11

    def check(self) -> None:
        """Raise ConfigError naming the option for the first value out of range."""
        check_seconds("--timeout-keep-alive", self.timeout_keep_alive)
        if self.limit_concurrency is not None:
            check_whole("--limit-concurrency", self.limit_concurrency, 1, None)
        check_whole("--ws-max-size", self.ws_max_size, 1, None)
        check_whole("--max-header-size", self.max_header_size, 1024, None)
        check_whole("--max-body-size", self.max_body_size, 0, None)
        if self.http not in HTTP_PARSERS:
            raise ConfigError(f"--http {self.http!r}: must be one of {', '.join(HTTP_PARSERS)}")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"--root-path {self.root_path!r}: must start with '/' and not end with one"
            )

    def to_map(self) -> dict[str, Any]:
        """For WELCOME (CBOR): plain values only."""
        values = dataclasses.asdict(self)
        values["forwarded_allow_ips"] = list(self.forwarded_allow_ips)
        return values

    @classmethod
    def from_map(cls, values: dict[str, Any]) -> AsgiSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "forwarded_allow_ips" in kept:
            kept["forwarded_allow_ips"] = tuple(kept["forwarded_allow_ips"])
        return cls(**kept)
