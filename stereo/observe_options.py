"""`stereo run --metrics/--dashboard` and the `stereo dashboard` / `stereo metrics` commands
(docs/observability.md): syntax here, the process in :mod:`stereo.observe`.

``stereo run`` only passes the addresses on: the master starts ``python -m stereo.observe`` as a
supervised helper (:mod:`stereo.master.observer`) and knows nothing of HTTP or Prometheus.
"""

from __future__ import annotations

import argparse
from typing import Any

from .control.client import default_control_path
from .master.config import Settings
from .observe.address import check_address


def add_observe_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("observability (docs/observability.md)")
    group.add_argument(
        "--metrics",
        metavar="ADDR",
        type=check_address,
        default=None,
        help="serve Prometheus metrics (GET /metrics) and GET /healthz on HOST:PORT or"
        " unix:PATH, from a helper process (default: off)",
    )
    group.add_argument(
        "--dashboard",
        metavar="ADDR",
        type=check_address,
        default=None,
        help="serve the web dashboard on HOST:PORT or unix:PATH, from a helper process;"
        " controls need a token unless on loopback or a unix socket (default: off)",
    )
    group.add_argument(
        "--dashboard-token",
        metavar="TOKEN",
        default=None,
        help="the dashboard's token (default: none on loopback or unix:, else one generated"
        " and printed at start)",
    )


def apply_observe_options(args: argparse.Namespace, settings: Settings) -> None:
    observer: list[str] = []
    if args.metrics:
        observer += ["--metrics", args.metrics]
    if args.dashboard:
        observer += ["--dashboard", args.dashboard]
    settings.observer = tuple(observer)
    settings.observer_token = args.dashboard_token


def add_observe_commands(commands: Any) -> None:
    """`stereo dashboard` and `stereo metrics`, for a master already running."""
    control_help = "the master's control socket (default: $STEREO_CONTROL, else the usual path)"
    dashboard = commands.add_parser("dashboard", help="serve the web dashboard of a running master")
    dashboard.add_argument(
        "--bind",
        metavar="ADDR",
        type=check_address,
        default="127.0.0.1:9000",
        help="HOST:PORT or unix:PATH (default: %(default)s)",
    )
    dashboard.add_argument(
        "--dashboard-token",
        "--token",
        dest="token",
        metavar="TOKEN",
        default=None,
        help="required of every request (default: none on loopback or unix:, else generated"
        " and printed)",
    )
    dashboard.add_argument(
        "--metrics",
        metavar="ADDR",
        type=check_address,
        default=None,
        help="also serve /metrics and /healthz here",
    )
    dashboard.add_argument("--control", metavar="PATH", default=None, help=control_help)
    metrics = commands.add_parser("metrics", help="serve Prometheus metrics of a running master")
    metrics.add_argument(
        "--bind",
        metavar="ADDR",
        type=check_address,
        default="127.0.0.1:9100",
        help="HOST:PORT or unix:PATH (default: %(default)s)",
    )
    metrics.add_argument("--control", metavar="PATH", default=None, help=control_help)


def run_observe_command(args: argparse.Namespace) -> int:
    from .observe.main import run

    control = args.control or default_control_path()
    if args.command == "metrics":
        return run(control, args.bind, None, None)
    return run(control, args.metrics, args.bind, args.token)
