"""The ``stereo`` command. Only this layer prints errors for people and exits the process."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from .asgi.settings import (
    DEFAULT_FORWARDED_ALLOW_IPS,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_TIMEOUT_KEEP_ALIVE,
    DEFAULT_WS_MAX_SIZE,
    HTTP_PARSERS,
    INTERFACES,
    AsgiSettings,
)
from .config_loader import load_run_config, run_subparser
from .config_sources import blame, render
from .control.client import DEFAULT_REQUEST_TIMEOUT, default_control_path
from .errors import StereoError
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
from .wire.protocol import DEFAULT_INBOX_LIMIT, DEFAULT_MAX_MESSAGE_SIZE


def _whole(text: str) -> int:
    """Syntax only: every range is :meth:`Settings.check`'s, in one place for every caller."""
    try:
        return int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").isdecimal()
        problem = "is far too large" if digits else "is not a whole number"
        raise argparse.ArgumentTypeError(f"{text[:40]!r} {problem}") from None


def _number(text: str) -> float:
    """Syntax only, as :func:`_whole` (NaN and infinities parse; the check refuses them)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None


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
        type=_whole,
        default=None,
        help=f"number of worker processes (default: CPUs available, here {default_workers()})",
    )
    run.add_argument(
        "--max-workers",
        type=_whole,
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
        type=_whole,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest encoded broadcast (default: %(default)s)",
    )
    run.add_argument(
        "--outbox-limit",
        type=_whole,
        default=DEFAULT_OUTBOX_LIMIT,
        metavar="BYTES",
        help="bytes the master buffers for one worker before cutting it off as a slow consumer"
        " (default: %(default)s)",
    )
    run.add_argument(
        "--inbox-limit",
        type=_whole,
        default=DEFAULT_INBOX_LIMIT,
        metavar="BYTES",
        help="bytes of received broadcasts one messages() iterator of a worker may hold before"
        " the worker stops reading (then --outbox-limit applies) (default: %(default)s)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=_number,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help="how long a stopping worker may drain before it is killed (default: %(default)s)",
    )
    run.add_argument(
        "--timeout",
        type=_number,
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
    _add_asgi_options(run)
    add_ops_options(run)
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
        type=_number,
        default=30.0,
        metavar="SECONDS",
        help="without the broker this long, cut the workers off (they start again at the"
        " tail) (default: %(default)g)",
    )
    bridge.add_argument(
        "--bridge-retention",
        type=_whole,
        default=1_000_000,
        metavar="ENTRIES",
        help="batches the broker keeps; a hub further behind is cut off (default: %(default)s)",
    )

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


def _add_asgi_options(run: argparse.ArgumentParser) -> None:
    asgi = run.add_argument_group("ASGI apps (FastAPI, Starlette, ...): the HTTP front end")
    asgi.add_argument(
        "--interface",
        choices=INTERFACES,
        default="auto",
        help="what MODULE:ATTR is: serve = async serve(worker), asgi = an ASGI 3 app; auto: a"
        " coroutine function of one argument is serve, any other callable ASGI (default: auto)",
    )
    asgi.add_argument(
        "--http",
        choices=HTTP_PARSERS,
        default="auto",
        help="HTTP/1.1 parser: httptools (C), h11 (pure Python); auto: httptools if installed",
    )
    asgi.add_argument("--root-path", default="", help="the ASGI root_path (mounted under a prefix)")
    asgi.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take the client address and scheme from X-Forwarded-For/-Proto when the peer is"
        " in --forwarded-allow-ips (default: on)",
    )
    asgi.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated proxy addresses to trust, or '*' (default: $FORWARDED_ALLOW_IPS,"
        " else 127.0.0.1,::1)",
    )
    asgi.add_argument(
        "--timeout-keep-alive",
        type=_number,
        default=DEFAULT_TIMEOUT_KEEP_ALIVE,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default: %(default)g)",
    )
    asgi.add_argument(
        "--limit-concurrency",
        type=_whole,
        default=None,
        metavar="N",
        help="connections per worker past which new ones are answered 503 (default: no limit)",
    )
    asgi.add_argument(
        "--ws-max-size",
        type=_whole,
        default=DEFAULT_WS_MAX_SIZE,
        metavar="BYTES",
        help="largest WebSocket message; a larger one closes with 1009 (default: %(default)s)",
    )
    asgi.add_argument(
        "--max-header-size",
        type=_whole,
        default=DEFAULT_MAX_HEADER_SIZE,
        metavar="BYTES",
        help="largest request line plus headers; past it, 431 (default: %(default)s)",
    )
    asgi.add_argument(
        "--max-body-size",
        type=_whole,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help="largest request body; past it, 413 (default: %(default)s)",
    )
    asgi.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print one line per HTTP response (default: on)",
    )


def _asgi_settings(args: argparse.Namespace) -> AsgiSettings:
    allowed = args.forwarded_allow_ips  # $FORWARDED_ALLOW_IPS too: config_sources.ENV_ALIASES
    return AsgiSettings(
        root_path=args.root_path,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=(
            tuple(ip.strip() for ip in allowed.split(",") if ip.strip())
            if allowed
            else DEFAULT_FORWARDED_ALLOW_IPS
        ),
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,
        ws_max_size=args.ws_max_size,
        access_log=args.access_log,
        max_header_size=args.max_header_size,
        max_body_size=args.max_body_size,
        http=args.http,
    )


_CONTROL_HELP = (
    "the master's control socket (default: $STEREO_CONTROL, else"
    " $XDG_RUNTIME_DIR/stereo/stereo.sock, else /tmp/stereo-$UID/stereo.sock)"
)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .master.master import run_master

    try:
        specs, resolved = load_run_config(
            parser, argv, args.config, os.environ, Path.cwd(), numbers=(_whole, _number)
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
    )
    apply_ops_options(args, settings)
    apply_observe_options(args, settings)
    try:
        asgi = _asgi_settings(args)
        asgi.check()
        settings.asgi = asgi.to_map()
        settings.check()
        if args.print_config:
            return 0
        # argv: a master upgrade (SIGUSR2) starts the new master with it, and the new master
        # reads the environment and the config file again: that is how it sees their changes.
        trio.run(run_master, settings, argv)
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
    if args.command == "top":
        sys.exit(_console_cli.top(path, once=args.once))
    if args.command == "ctl":
        sys.exit(
            _console_cli.ctl(args.control, args.words, as_json=args.json, timeout=args.timeout)
        )


if __name__ == "__main__":
    main()
