"""The observer process: ``stereo dashboard``, ``stereo metrics`` and the helper ``stereo run
--metrics/--dashboard`` starts (``python -m stereo.observe``). Library code: it raises, and
:func:`main` turns what it raises into one line and an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial

import trio

from .access import Access, choose_token
from .address import check_address
from .http import bound_address, open_listeners, serve
from .link import MasterLink
from .service import Dashboard, Exporter

TOKEN_ENV = "STEREO_DASHBOARD_TOKEN"  # how the master hands the helper its token (not argv)
PREFIX = "[observe] "


def say(line: str) -> None:
    print(PREFIX + line, flush=True)


async def _watch_stdin() -> None:
    """Return when stdin ends: the master that started this process is gone."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while await stream.receive_some(4096):
            pass


async def observe(
    control: str,
    metrics: str | None,
    dashboard: str | None,
    token: str | None,
    *,
    watch_stdin: bool = False,
) -> None:
    """Serve the exporter and/or the dashboard until cancelled (or stdin ends). Raises OSError
    or ValueError, before serving anything, when it cannot listen where asked."""
    # Listen first: a refused address is one error, not a group from inside the nursery.
    exporter = open_listeners(metrics) if metrics is not None else []
    board_listeners = open_listeners(dashboard) if dashboard is not None else []
    async with trio.open_nursery() as nursery:
        if exporter:
            nursery.start_soon(serve, exporter, Exporter(MasterLink(control)).handle)
            say(f"metrics on http://{bound_address(exporter[0])}/metrics")
        if dashboard is not None:
            token, generated = choose_token(dashboard, token)
            board = Dashboard(MasterLink(control), MasterLink(control), Access(token), say)
            nursery.start_soon(board.poll)
            nursery.start_soon(serve, board_listeners, board.handle)
            where = f"http://{bound_address(board_listeners[0])}/"
            if generated:
                say(f"dashboard on {where}?token={token} (the token was generated for this run)")
            else:
                say(f"dashboard on {where}" + (" (token required)" if token else ""))
        if watch_stdin:
            await _watch_stdin()
            nursery.cancel_scope.cancel()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stereo.observe",
        description="the metrics exporter and the dashboard of a running master",
    )
    parser.add_argument("--control", metavar="PATH", required=True)
    parser.add_argument("--metrics", metavar="ADDR", type=check_address, default=None)
    parser.add_argument("--dashboard", metavar="ADDR", type=check_address, default=None)
    parser.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(
    control: str,
    metrics: str | None,
    dashboard: str | None,
    token: str | None,
    *,
    watch_stdin: bool = False,
) -> int:
    """Run until interrupted; the exit status (2: cannot listen where asked)."""
    try:
        trio.run(partial(observe, control, metrics, dashboard, token, watch_stdin=watch_stdin))
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"stereo: cannot serve: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(
        args.control,
        args.metrics,
        args.dashboard,
        os.environ.get(TOKEN_ENV) or None,
        watch_stdin=args.watch_stdin,
    )
