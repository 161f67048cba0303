"""``stereo console``, ``stereo top`` and ``stereo ctl``: the command-line ends of the control
socket. Only this layer (with :mod:`stereo.cli`) prints for people and picks exit statuses.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from ..errors import ControlError
from ..wire.control import shown
from .client import (
    DEFAULT_REQUEST_TIMEOUT,
    ControlClient,
    ControlTimeout,
    ControlUnreachable,
    default_control_path,
)
from .render import format_help, format_log_line, format_result
from .syntax import UsageError, parse_words

#: ``stereo ctl`` exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1  # the master refused or failed the command
EXIT_USAGE = 2  # the command line is wrong (as argparse)
EXIT_UNREACHABLE = 3  # no master answers at the control socket
EXIT_TIMEOUT = 4  # connected, but no answer within --timeout (the master may still act on it)
EXIT_INTERRUPTED = 130  # `stereo logs -f` left with Ctrl-C, as shells report it

MAX_TIMEOUT = 86400.0  # a day: beyond it, "wait for ever" is what was meant, and is refused


def parse_timeout(text: str) -> float:
    """``ctl --timeout``: seconds, finite, above 0 and at most a day; UsageError otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise UsageError(
            f"the timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g},"
            f" not {shown(text)}"
        )
    return value


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


def logs(path: str, ids: list[int], follow: bool, lines: int, as_json: bool) -> int:
    """``stereo logs``: the last ``lines`` lines, then (``follow``) new ones as they come, by
    long poll (docs/logging.md), until Ctrl-C or until the master goes away."""
    from .follow import follow as follow_log

    following = False
    try:
        with ControlClient.connect(path) as client:
            for result in follow_log(client, ids or None, None, lines):
                if result["missed"]:
                    missed = result["missed"]
                    print(f"stereo logs: {missed} lines were dropped here", file=sys.stderr)
                for line in result["lines"]:
                    print(json.dumps(line) if as_json else format_log_line(line))
                sys.stdout.flush()
                if not follow:
                    break
                following = True
    except ControlUnreachable as exc:
        print(f"stereo logs: {exc}", file=sys.stderr)
        # Once following, the master going away (it stopped) ends the follow normally.
        return EXIT_OK if following else EXIT_UNREACHABLE
    except ControlError as exc:
        print(f"stereo logs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `stereo logs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _take_options(words: list[str], options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Options may also follow the command (``stereo ctl status --json``)."""
    rest: list[str] = []
    options = dict(options)
    i = 0
    while i < len(words):
        word = words[i]
        name, equals, value = word.partition("=")
        if word == "--json":
            options["as_json"] = True
        elif name in ("--control", "--timeout") and (equals or i + 1 < len(words)):
            if not equals:
                i += 1
                value = words[i]
            options[name[2:]] = value
        else:
            rest.append(word)
        i += 1
    return rest, options


def ctl(
    control: str | None,
    words: list[str],
    as_json: bool = False,
    timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> int:
    words, options = _take_options(
        words, {"control": control, "as_json": as_json, "timeout": timeout}
    )
    as_json = options["as_json"]
    path = options["control"] or default_control_path()

    def fail(code: int, message: str) -> int:
        if as_json:
            print(json.dumps({"ok": False, "error": message}))
        print(f"stereo ctl: {message}", file=sys.stderr)
        return code

    try:
        if isinstance(options["timeout"], str):  # given after the command
            options["timeout"] = parse_timeout(options["timeout"])
        command, args = parse_words(words)
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    if command.name == "help":
        text = format_help(args.get("command"))
        print(json.dumps(text) if as_json else text)
        return EXIT_OK
    if not command.in_master:
        return fail(EXIT_USAGE, f"{command.name} only makes sense in `stereo console`")
    if args.pop("follow", False):
        return fail(EXIT_USAGE, "logs -f: use `stereo logs -f` to follow the log")
    try:
        with ControlClient.connect(path, request_timeout=options["timeout"]) as client:
            result: Any = client.request(command.name, args)
    except ControlUnreachable as exc:
        return fail(EXIT_UNREACHABLE, str(exc))
    except ControlTimeout as exc:
        return fail(EXIT_TIMEOUT, str(exc))
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
