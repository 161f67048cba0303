"""The job pool's settings (docs/pool.md): ``--pool N`` and ``--pool NAME=N``, parsed and checked.

Pure: the CLI parses each ``--pool`` value with :func:`parse_pool`, :class:`~.config.Settings`
checks the whole with :func:`check_pools`.
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import ConfigError

DEFAULT_POOL: Final = "default"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


def parse_pool(text: str) -> tuple[str, int]:
    """``N`` (the default pool) or ``NAME=N``; ConfigError naming the option otherwise."""
    name, sep, count = text.rpartition("=")
    if not sep:
        name = DEFAULT_POOL
    if not _NAME.match(name):
        raise ConfigError(
            f"--pool {text!r}: a pool's name is a letter or _ then letters, digits, _ . -"
        )
    if not count.isdigit() or not 0 <= int(count) <= 65536:
        raise ConfigError(f"--pool {text!r}: the number of pool processes must be 0..65536")
    return name, int(count)


def check_pools(pools: dict[str, int], room: int) -> None:
    """Each pool's name and size, and their total within the slots --max-workers leaves."""
    for name, count in pools.items():
        parse_pool(f"{name}={count}")
    total = sum(pools.values())
    if total > room:
        raise ConfigError(
            f"--pool: {total} pool processes and --workers would pass --max-workers"
            " (pool processes take worker slots)"
        )
