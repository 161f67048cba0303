"""Listening addresses of the exporter and the dashboard: HOST:PORT, [IPv6]:PORT, unix:PATH
(pure; imported by the CLI, so it imports nothing heavy)."""

from __future__ import annotations

import argparse


def split_host_port(address: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; raises ValueError with a sentence naming the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not HOST:PORT, [IPv6]:PORT or unix:PATH")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def check_address(text: str) -> str:
    """An argparse type: HOST:PORT, [IPv6]:PORT or unix:PATH."""
    if text.startswith("unix:"):
        if len(text) == 5:
            raise argparse.ArgumentTypeError("unix: needs a path")
        return text
    try:
        split_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
