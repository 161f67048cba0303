"""The ``stereo`` command. Only this layer prints errors for people and exits the process."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from . import exitcodes
from .argtypes import number, whole
from .asgi_options import add_asgi_options, asgi_settings
from .config_loader import load_run_config, run_subparser
from .config_sources import blame, render
from .control.client import DEFAULT_REQUEST_TIMEOUT, default_control_path
from .errors import AppBootFailed, StereoError
from .master.binds import parse_bind
from .master.config import (
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_MAX_WORKERS,
    DEFAULT_OUTBOX_LIMIT,
    DEFAULT_TIMEOUT,
    Settings,
    default_workers,
)
from .observe_options import (
    add_observe_commands,
    add_observe_options,
    apply_observe_options,
    run_observe_command,
)
from .ops_options import add_ops_options, apply_ops_options
from .pool_options import add_pool_options, apply_pool_options
from .version import VersionAction
from .wire.protocol import DEFAULT_INBOX_LIMIT, DEFAULT_MAX_MESSAGE_SIZE


def _ctl_timeout(text: str) -> float:
    from .control.cli import parse_timeout
    from .control.syntax import UsageError

    try:
        return parse_timeout(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bind(text: str) -> object:
    try:
        return parse_bind(text)
    except StereoError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stereo",
        description="Run one network app as several worker processes that broadcast to each other.",
    )
    parser.add_argument("-V", "--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start a master and its workers")
    run.add_argument(
        "app",
        metavar="MODULE:ATTR",
        nargs="?",  # or app = "..." in the config file, or $STEREO_APP
        default=None,
        help="async function serve(worker) to run, or an ASGI app",
    )
    _add_config_options(run)
    run.add_argument(
        "-w",
        "--workers",
        type=whole,
        default=None,
        help=f"number of worker processes (default: CPUs available, here {default_workers()})",
    )
    run.add_argument(
        "--max-workers",
        type=whole,
        default=DEFAULT_MAX_WORKERS,
        metavar="N",
        help="most workers at once, draining ones included: -w, add, scale and SIGTTIN are"
        " refused past it (default: %(default)s)",
    )
    run.add_argument(
        "-b",
        "--bind",
        dest="binds",
        action="append",
        type=_bind,
        default=[],
        metavar="ADDRESS",
        help="listen on HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable",
    )
    run.add_argument(
        "--app-dir", default=".", help="directory put first on sys.path (default: current)"
    )
    run.add_argument(
        "--max-message-size",
        type=whole,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest encoded broadcast (default: %(default)s)",
    )
    run.add_argument(
        "--outbox-limit",
        type=whole,
        default=DEFAULT_OUTBOX_LIMIT,
        metavar="BYTES",
        help="bytes the master buffers for one worker before cutting it off as a slow consumer"
        " (default: %(default)s)",
    )
    run.add_argument(
        "--inbox-limit",
        type=whole,
        default=DEFAULT_INBOX_LIMIT,
        metavar="BYTES",
        help="bytes of received broadcasts one messages() iterator of a worker may hold before"
        " the worker stops reading (then --outbox-limit applies) (default: %(default)s)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=number,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help="how long a stopping worker may drain before it is killed (default: %(default)s)",
    )
    run.add_argument(
        "--timeout",
        type=number,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="kill a ready worker whose event loop sends no heartbeat for this long"
        " (default: %(default)s)",
    )
    run.add_argument(
        "--reuse-port",
        action="store_true",
        help="give each worker slot its own SO_REUSEPORT listening socket on every host:port"
        " bind (the kernel spreads connections evenly) instead of one shared socket",
    )
    run.add_argument(
        "--control",
        metavar="PATH",
        default=None,
        help=_CONTROL_HELP,
    )
    run.add_argument(
        "--no-console",
        action="store_true",
        help="do not offer the interactive console, even in a terminal",
    )
    add_asgi_options(run)
    add_ops_options(run)
    _add_logging_options(run)
    add_pool_options(run)
    add_observe_options(run)
    bridge = run.add_argument_group(
        "scale-out: one broadcast order across hubs through a broker (docs/scale-out.md)"
    )
    bridge.add_argument(
        "--bridge",
        metavar="URL",
        default=None,
        help="share broadcasts with every hub naming the same broker and --bridge-name:"
        " redis://HOST:PORT/DB (Redis Streams) or nats://HOST:PORT (NATS JetStream)",
    )
    bridge.add_argument(
        "--bridge-name", default="stereo", metavar="NAME", help="the shared stream's name"
    )
    bridge.add_argument(
        "--bridge-timeout",
        type=number,
        default=30.0,
        metavar="SECONDS",
        help="without the broker this long, cut the workers off (they start again at the"
        " tail) (default: %(default)g)",
    )
    bridge.add_argument(
        "--bridge-retention",
        type=whole,
        default=1_000_000,
        metavar="ENTRIES",
        help="batches the broker keeps; a hub further behind is cut off (default: %(default)s)",
    )

    logs = commands.add_parser(
        "logs",
        help="recent output of the workers and the master's lines; -f follows it live",
        description="Print the last lines the master keeps (1,000 at most) from its workers"
        " and itself, and with -f go on printing new ones until Ctrl-C. Worker ids choose"
        " whose lines (0 is the master).",
    )
    logs.add_argument("ids", nargs="*", type=whole, metavar="ID", help="only these workers")
    logs.add_argument("-f", "--follow", action="store_true", help="go on printing new lines")
    logs.add_argument(
        "-n",
        "--lines",
        type=whole,
        default=100,
        metavar="N",
        help="how many recent lines to print first (default: %(default)s)",
    )
    logs.add_argument("--json", action="store_true", help="one JSON object a line")
    logs.add_argument("--control", metavar="PATH", default=None, help=_CONTROL_HELP)

    console = commands.add_parser("console", help="attach an interactive console to a master")
    console.add_argument("--control", metavar="PATH", default=None, help=_CONTROL_HELP)

    top = commands.add_parser("top", help="live view of a master's workers, redrawn every second")
    top.add_argument("--control", metavar="PATH", default=None, help=_CONTROL_HELP)
    top.add_argument("--once", action="store_true", help="print one frame and exit")

    ctl = commands.add_parser(
        "ctl",
        help="run one console command in a master and exit",
        description="Run one console command (see `stereo ctl help`) and exit: 0 when it"
        " succeeded, 1 when it failed, 2 for bad usage, 3 when no master could be reached,"
        " 4 when the master did not answer within --timeout.",
    )
    ctl.add_argument("--control", metavar="PATH", default=None, help=_CONTROL_HELP)
    ctl.add_argument("--json", action="store_true", help="print the result as JSON")
    ctl.add_argument(
        "--timeout",
        type=_ctl_timeout,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="give up waiting for the answer after this long (default: %(default)g)",
    )
    ctl.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS]", help="e.g. status, add 2"
    )
    add_observe_commands(commands)
    return parser


def _add_config_options(run: argparse.ArgumentParser) -> None:
    run.epilog = (
        "Every option can also be set in the environment as STEREO_<OPTION> (--max-workers:"
        " STEREO_MAX_WORKERS) and in the config file by its long name (max-workers); the command"
        " line wins over the environment, which wins over the file. See docs/cli.md."
    )
    run.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None,
        help="read settings from this TOML file (default: $STEREO_CONFIG, else [tool.stereo]"
        " in ./pyproject.toml); the command line and STEREO_* variables win over it",
    )
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print every setting and where it came from, then exit without starting",
    )


def _add_logging_options(run: argparse.ArgumentParser) -> None:
    from .logs import LOG_FORMATS, LOG_LEVELS

    group = run.add_argument_group("logging (docs/logging.md)")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="the master's own lines at this level and up (default: %(default)s)",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        default=None,
        help="write the master's lines and the workers' output to PATH instead of the"
        " terminal; SIGUSR1 reopens it (logrotate)",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text, or json: one JSON object a line (default: %(default)s)",
    )


_CONTROL_HELP = (
    "the master's control socket (default: $STEREO_CONTROL, else"
    " $XDG_RUNTIME_DIR/stereo/stereo.sock, else /tmp/stereo-$UID/stereo.sock)"
)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .master.master import run_master

    try:
        specs, resolved = load_run_config(
            parser, argv, args.config, os.environ, Path.cwd(), numbers=(whole, number)
        )
    except StereoError as exc:
        print(f"stereo: {exc}", file=sys.stderr)
        return 2
    for warning in resolved.warnings:
        print(f"stereo: warning: {warning}", file=sys.stderr)
    if args.print_config:
        print(render(specs, resolved), end="")
    vars(args).update(resolved.values)
    if args.app is None and not args.print_config:
        run_subparser(build_parser()).error(
            "the following arguments are required: MODULE:ATTR"
            " (or app in the config file, or $STEREO_APP)"
        )
    workers = args.workers
    if workers is None:  # as many as CPUs, within the ceiling
        workers = min(default_workers(), max(args.max_workers, 1))
    settings = Settings(
        app=args.app or "",
        app_dir=args.app_dir,
        workers=workers,
        max_workers=args.max_workers,
        binds=args.binds,
        max_message_size=args.max_message_size,
        outbox_limit=args.outbox_limit,
        inbox_limit=args.inbox_limit,
        graceful_timeout=args.graceful_timeout,
        timeout=args.timeout,
        reuse_port=args.reuse_port,
        control_path=args.control or default_control_path(),
        console=not args.no_console and sys.stdin.isatty() and sys.stdout.isatty(),
        interface=args.interface,
        bridge=args.bridge,
        bridge_name=args.bridge_name,
        bridge_timeout=args.bridge_timeout,
        bridge_retention=args.bridge_retention,
        log_level=args.log_level,
        log_file=args.log_file,
        log_format=args.log_format,
    )
    apply_ops_options(args, settings)
    apply_pool_options(args, settings)
    apply_observe_options(args, settings)
    try:
        asgi = asgi_settings(args)
        asgi.check()
        settings.asgi = asgi.to_map()
        settings.check()
        if args.print_config:
            return 0
        # argv: a master upgrade (SIGUSR2) starts the new master with it, and the new master
        # reads the environment and the config file again: that is how it sees their changes.
        trio.run(run_master, settings, argv)
    except AppBootFailed as exc:
        print(f"stereo: {exc}", file=sys.stderr)
        return exitcodes.RUN_APP_BOOT_FAILED
    except StereoError as exc:
        print(f"stereo: {blame(str(exc), specs, resolved)}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        sys.exit(_run(parser, args, sys.argv[1:] if argv is None else argv))
    if args.command in ("dashboard", "metrics"):
        sys.exit(run_observe_command(args))
    from .control import cli as _console_cli

    path = args.control or default_control_path()
    if args.command == "console":
        sys.exit(_console_cli.console(path))
    if args.command == "logs":
        sys.exit(_console_cli.logs(path, args.ids, args.follow, args.lines, args.json))
    if args.command == "top":
        sys.exit(_console_cli.top(path, once=args.once))
    if args.command == "ctl":
        sys.exit(
            _console_cli.ctl(args.control, args.words, as_json=args.json, timeout=args.timeout)
        )


if __name__ == "__main__":
    main()
