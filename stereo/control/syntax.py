"""The commands as operators type them: the table the console and ``stereo ctl`` know (usage,
help text, aliases, completion hints) and the parsing of a typed line into a command name and its
wire arguments.

Client side only: nothing here runs a command. The master has its own table of what each name
does (:data:`stereo.control.commands.HANDLERS`), keyed by the same names; ``in_master`` marks the
commands that run there, the others (``top``, ``help``, ``quit``) are the console's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ControlError, EncodeError
from ..wire.control import parse_signal, shown
from ..wire.protocol import encode_cbor

#: The words after the command name (and the raw rest of the line) -> wire arguments.
ArgParser = Callable[[list[str], str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Command:
    """A command as the console and ``ctl`` know it: how to type it, and what to send."""

    name: str
    usage: str
    summary: str
    details: str
    parse: ArgParser
    in_master: bool = True  # False: the console runs it itself (top, help, quit)
    takes_ids: bool = False  # its arguments are worker ids (for completion)
    aliases: tuple[str, ...] = field(default=())


class UsageError(ControlError):
    """The typed command line is wrong; the message says how to write it."""


def _no_args(name: str) -> ArgParser:
    def parse(words: list[str], rest: str) -> dict[str, Any]:
        if words:
            raise UsageError(f"{name} takes no arguments")
        return {}

    return parse


def _word_int(word: str, what: str) -> int:
    try:
        value = int(word)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {shown(word)}") from None
    return value


def _parse_inspect(words: list[str], rest: str) -> dict[str, Any]:
    if len(words) != 1:
        raise UsageError("usage: inspect ID")
    return {"id": _word_int(words[0], "a worker id")}


def _take_pool(words: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``--pool [NAME]`` among the words (the job pool; NAME: default), taken out."""
    if "--pool" not in words:
        return words, {}
    at = words.index("--pool")
    rest = words[at + 1 :]
    if rest and not rest[0].isdigit() and not rest[0].startswith("-"):
        return words[:at] + rest[1:], {"pool": rest[0]}
    return words[:at] + rest, {"pool": "default"}


def _parse_add(words: list[str], rest: str) -> dict[str, Any]:
    words, pool = _take_pool(words)
    if len(words) > 1:
        raise UsageError("usage: add [N] [--pool [NAME]]")
    return {"count": _word_int(words[0], "N") if words else 1, **pool}


def _parse_remove(words: list[str], rest: str) -> dict[str, Any]:
    words, pool = _take_pool(words)
    if not words:
        return pool
    if words[0] in ("-n", "--count"):
        if len(words) != 2:
            raise UsageError("usage: remove -n N [--pool [NAME]]")
        return {"count": _word_int(words[1], "N"), **pool}
    return {"ids": [_word_int(word, "a worker id") for word in words]}


def _parse_scale(words: list[str], rest: str) -> dict[str, Any]:
    words, pool = _take_pool(words)
    if len(words) != 1:
        raise UsageError("usage: scale N [--pool [NAME]]")
    return {"workers": _word_int(words[0], "N"), **pool}


def _parse_restart(words: list[str], rest: str) -> dict[str, Any]:
    if words == ["all"]:
        return {}
    if not words:
        raise UsageError("usage: restart ID... | restart all")
    return {"ids": [_word_int(word, "a worker id") for word in words]}


def _parse_kill(words: list[str], rest: str) -> dict[str, Any]:
    if len(words) not in (1, 2):
        raise UsageError("usage: kill ID [SIGNAL]")
    args: dict[str, Any] = {"id": _word_int(words[0], "a worker id")}
    if len(words) == 2:
        try:
            parse_signal(words[1])  # complain before sending
        except ControlError as exc:
            raise UsageError(str(exc)) from None
        args["signal"] = words[1]
    return args


#: The deepest nesting of lists and maps a broadcast value may have. CBOR decoders stop at 400
#: levels (the master decodes the request, two levels more than the value, and every worker the
#: payload), and Python's JSON reader fails near a thousand.
MAX_NESTING = 256


def _parse_broadcast(words: list[str], rest: str) -> dict[str, Any]:
    """The rest of the line as one JSON value that can be sent: anything that would fail later,
    in the encoder or on the way, is a usage error now."""
    text = rest.strip()
    if not text:
        raise UsageError('usage: broadcast VALUE (a JSON literal, e.g. {"reload": true})')
    too_deep = f"broadcast: the value is nested more than {MAX_NESTING} levels deep"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"broadcast: {shown(text)} is not JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except RecursionError:
        raise UsageError(too_deep) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise UsageError(f"broadcast: cannot read the value: {str(exc).split(';')[0]}") from None
    if _nesting(value) > MAX_NESTING:
        raise UsageError(too_deep)
    try:
        encode_cbor(value)
    except EncodeError as exc:  # a lone surrogate ("\ud800") has no UTF-8 form
        raise UsageError(f"broadcast: the value cannot be sent: {exc}") from None
    return {"value": value}


def _nesting(value: Any) -> int:
    """How deep lists and maps nest in ``value`` (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_shutdown(words: list[str], rest: str) -> dict[str, Any]:
    if len(words) > 1 or (words and words[0] not in ("graceful", "quick")):
        raise UsageError("usage: shutdown [graceful|quick]")
    return {"mode": words[0] if words else "graceful"}


def _parse_logs(words: list[str], rest: str) -> dict[str, Any]:
    """``logs [-f] [-n N] [ID...]``; ``follow`` is the client's, never sent."""
    args: dict[str, Any] = {}
    ids: list[int] = []
    rest_words = iter(words)
    for word in rest_words:
        if word in ("-f", "--follow"):
            args["follow"] = True
        elif word in ("-n", "--lines"):
            value = next(rest_words, None)
            if value is None:
                raise UsageError("usage: logs [-f] [-n N] [ID...]")
            args["limit"] = _word_int(value, "N")
        else:
            ids.append(_word_int(word, "a worker id"))
    if ids:
        args["ids"] = ids
    return args


def _parse_help(words: list[str], rest: str) -> dict[str, Any]:
    if len(words) > 1:
        raise UsageError("usage: help [COMMAND]")
    return {"command": words[0]} if words else {}


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in [
        Command(
            "status",
            "status",
            "the worker table",
            "One row per worker process: slot, pid, state, uptime, restarts, last exit reason,"
            " memory (RSS), CPU % over the last second, broadcasts in/out and how full its"
            " outbound buffer in the master is.",
            _no_args("status"),
        ),
        Command(
            "inspect",
            "inspect ID",
            "everything known about one worker",
            "Slot state, restarts, failure reason and, for each of its processes, counters,"
            " heartbeat age, cut-off reason, threads, open files and command line.",
            _parse_inspect,
            takes_ids=True,
        ),
        Command(
            "add",
            "add [N] [--pool [NAME]]",
            "start N more workers (default 1)",
            "New workers take the lowest free ids. Refused, adding none, past the master's"
            " --max-workers (draining workers count). --pool: pool processes of the job pool"
            " NAME (default: the default pool) instead.",
            _parse_add,
        ),
        Command(
            "remove",
            "remove [ID...] | remove -n N [--pool [NAME]]",
            "stop workers gracefully, without replacing them",
            "Removes the named workers, or the N highest-numbered ones (default: the highest one)."
            " Each drains (SIGTERM) and is killed after --graceful-timeout. With --pool, the"
            " highest-numbered pool processes (they finish the jobs they were sent first).",
            _parse_remove,
            takes_ids=True,
        ),
        Command(
            "scale",
            "scale N [--pool [NAME]]",
            "add or remove workers until there are N",
            "Removal is graceful and takes the highest ids first. Refused, changing nothing,"
            " past the master's --max-workers. --pool: the job pool's processes instead.",
            _parse_scale,
        ),
        Command(
            "restart",
            "restart ID... | restart all",
            "rolling restart",
            "One worker at a time: its replacement is started and ready before the old process"
            " is asked to drain. A failed worker is simply started again.",
            _parse_restart,
            takes_ids=True,
        ),
        Command(
            "kill",
            "kill ID [SIGNAL]",
            "send a signal to a worker (default TERM)",
            "SIGNAL is a name (TERM, SIGKILL, usr1...) or a number. The worker is respawned if it"
            " dies, as after any crash.",
            _parse_kill,
            takes_ids=True,
        ),
        Command(
            "broadcast",
            "broadcast VALUE",
            "send a JSON value to every worker (sender 0)",
            'The rest of the line is one JSON literal: 42, "text", [1, 2], {"reload": true}.',
            _parse_broadcast,
        ),
        Command(
            "stats",
            "stats",
            "hub totals and rates",
            "Broadcasts, deliveries and bytes since the start and per second over the last"
            " second, cut-offs (slow consumers dropped), respawns, master memory and CPU.",
            _no_args("stats"),
        ),
        Command(
            "snapshot",
            "snapshot",
            "everything the master knows, as raw data (for exporters)",
            "Slots, processes and hub counters as plain data, as the metrics exporter and the"
            " dashboard read them (docs/observability.md); no psutil figures.",
            _no_args("snapshot"),
        ),
        Command(
            "logs",
            "logs [-f] [-n N] [ID...]",
            "recent output of the workers and the master's lines",
            "The last N lines (default 100) the master keeps (1,000 at most), of workers ID"
            " (0 is the master) or of all. -f follows new lines live: in `stereo console`"
            " above the prompt until `logs off`; from the shell, `stereo logs -f`.",
            _parse_logs,
            takes_ids=True,
        ),
        Command(
            "shutdown",
            "shutdown [graceful|quick]",
            "stop the master and every worker",
            "graceful (the default) lets workers drain; quick kills them at once.",
            _parse_shutdown,
        ),
        Command(
            "top",
            "top",
            "live view, redrawn every second (q to leave)",
            "Also available as `stereo top`.",
            _no_args("top"),
            in_master=False,
            aliases=("watch",),
        ),
        Command(
            "help",
            "help [COMMAND]",
            "list the commands, or explain one",
            "",
            _parse_help,
            in_master=False,
        ),
        Command(
            "quit",
            "quit",
            "detach the console; the master keeps running",
            "Ctrl-D does the same.",
            _no_args("quit"),
            in_master=False,
            aliases=("exit", "detach"),
        ),
    ]
}

ALIASES = {alias: command.name for command in COMMANDS.values() for alias in command.aliases}


def lookup(name: str) -> Command:
    command = COMMANDS.get(ALIASES.get(name, name))
    if command is None:
        raise UsageError(f"unknown command {name!r}; type `help` for the list")
    return command


def parse_words(words: list[str], rest: str | None = None) -> tuple[Command, dict[str, Any]]:
    """Client side: a command name and its words -> the command and its wire arguments."""
    if not words:
        raise UsageError("no command given")
    command = lookup(words[0])
    if rest is None:
        rest = " ".join(words[1:])
    return command, command.parse(words[1:], rest)


def parse_line(line: str) -> tuple[Command, dict[str, Any]] | None:
    """Client side: one console line -> the command and its wire arguments (None: empty line).

    Words are split on whitespace, not shell-quoted, so ``broadcast`` gets its JSON verbatim."""
    stripped = line.strip()
    if not stripped:
        return None
    name, _, rest = stripped.partition(" ")
    return parse_words([name, *rest.split()], rest)
