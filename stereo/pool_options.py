"""`stereo run`'s job pool option (docs/pool.md): ``--pool N`` or ``--pool NAME=N``, repeatable.
Syntax here (:func:`stereo.master.pools.parse_pool`); the total is checked by
:meth:`stereo.master.config.Settings.check`.
"""

from __future__ import annotations

import argparse

from .errors import ConfigError
from .master.config import Settings
from .master.pools import parse_pool


def _pool(text: str) -> str:
    """Checked here, kept as text: the config printout shows it as it is written."""
    try:
        parse_pool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_pool_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("job pool (docs/pool.md)")
    group.add_argument(
        "--pool",
        metavar="[NAME=]N",
        dest="pools",
        action="append",
        type=_pool,
        default=[],
        help="start N pool processes that run worker.run_sync(fn, ...) jobs, one at a time each;"
        " NAME=N for a named pool (run_sync(fn, pool=NAME)); repeatable (default: none)",
    )


def apply_pool_options(args: argparse.Namespace, settings: Settings) -> None:
    pools: dict[str, int] = {}
    for text in args.pools or []:
        name, count = parse_pool(text)
        pools[name] = count  # a name given twice: the last one counts
    settings.pools = pools
