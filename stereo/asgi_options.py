"""`stereo run`'s options for ASGI apps (docs/asgi.md): the HTTP front end. Syntax here;
ranges are :meth:`stereo.asgi.settings.AsgiSettings.check`'s."""

from __future__ import annotations

import argparse

from .argtypes import number, whole
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


def add_asgi_options(run: argparse.ArgumentParser) -> None:
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
        type=number,
        default=DEFAULT_TIMEOUT_KEEP_ALIVE,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default: %(default)g)",
    )
    asgi.add_argument(
        "--limit-concurrency",
        type=whole,
        default=None,
        metavar="N",
        help="connections per worker past which new ones are answered 503 (default: no limit)",
    )
    asgi.add_argument(
        "--ws-max-size",
        type=whole,
        default=DEFAULT_WS_MAX_SIZE,
        metavar="BYTES",
        help="largest WebSocket message; a larger one closes with 1009 (default: %(default)s)",
    )
    asgi.add_argument(
        "--max-header-size",
        type=whole,
        default=DEFAULT_MAX_HEADER_SIZE,
        metavar="BYTES",
        help="largest request line plus headers; past it, 431 (default: %(default)s)",
    )
    asgi.add_argument(
        "--max-body-size",
        type=whole,
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


def asgi_settings(args: argparse.Namespace) -> AsgiSettings:
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
