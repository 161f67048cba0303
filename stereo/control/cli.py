"""``stereo console``, ``stereo top`` and ``stereo ctl``: the command-line ends of the control
socket. Only this layer (with :mod:`stereo.cli`) prints for people and picks exit statuses.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..errors import ControlError
from .client import ControlClient, ControlUnreachable, default_control_path
from .render import format_help, format_result
from .syntax import UsageError, parse_words

#: ``stereo ctl`` exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1  # the master refused or failed the command
EXIT_USAGE = 2  # the command line is wrong (as argparse)
EXIT_UNREACHABLE = 3  # no master answers at the control socket


def console(path: str) -> int:
    from .console import run_console

    return run_console(path)


def top(path: str, once: bool = False) -> int:
    from .top import fetch_frame, run_top

    try:
        with ControlClient.connect(path) as client:
            if once:
                print(fetch_frame(client))
                return EXIT_OK
            error = run_top(client)
    except ControlUnreachable as exc:
        print(f"stereo top: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ControlError as exc:
        print(f"stereo top: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if error is not None:
        print(f"stereo top: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


def _take_options(
    words: list[str], control: str | None, as_json: bool
) -> tuple[list[str], str | None, bool]:
    """Options may also follow the command (``stereo ctl status --json``)."""
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--json":
            as_json = True
        elif word == "--control" and i + 1 < len(words):
            control = words[i + 1]
            i += 1
        elif word.startswith("--control="):
            control = word.partition("=")[2]
        else:
            rest.append(word)
        i += 1
    return rest, control, as_json


def ctl(control: str | None, words: list[str], as_json: bool = False) -> int:
    words, control, as_json = _take_options(words, control, as_json)
    path = control or default_control_path()

    def fail(code: int, message: str) -> int:
        if as_json:
            print(json.dumps({"ok": False, "error": message}))
        print(f"stereo ctl: {message}", file=sys.stderr)
        return code

    try:
        command, args = parse_words(words)
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    if command.name == "help":
        text = format_help(args.get("command"))
        print(json.dumps(text) if as_json else text)
        return EXIT_OK
    if not command.in_master:
        return fail(EXIT_USAGE, f"{command.name} only makes sense in `stereo console`")
    try:
        with ControlClient.connect(path) as client:
            result: Any = client.request(command.name, args)
    except ControlUnreachable as exc:
        return fail(EXIT_UNREACHABLE, str(exc))
    except ControlError as exc:
        return fail(EXIT_FAILED, str(exc))
    text = (
        json.dumps(result, indent=2, sort_keys=True)
        if as_json
        else format_result(command.name, result)
    )
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `stereo ctl status | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
