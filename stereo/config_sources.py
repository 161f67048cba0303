"""Where each ``stereo run`` setting comes from: the command line, the environment, a config file
or the option's default, in that order of precedence.

Pure logic, no I/O. The options are read from the run parser's argparse actions
(:func:`specs_from_parser`), so an option added to the parser gets its environment variable
(``--max-workers`` -> ``STEREO_MAX_WORKERS``) and its config key (``max-workers``) with no code of
its own. :func:`resolve` takes what the command line gave, an environment mapping and a parsed
TOML table, and returns every value with its :class:`Source`, or raises :class:`SourceError`
naming the bad value and where it came from. Values from the environment and files go through the
option's own type function, as on the command line, so range checks stay in ``Settings.check``.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "STEREO_"
CONFIG_ENV = "STEREO_CONFIG"  # the config file, when there is no -c (read by config_loader)
# The names operators already set for these (gunicorn's and uvicorn's WEB_CONCURRENCY, uvicorn's
# FORWARDED_ALLOW_IPS), read after the STEREO_ name.
ENV_ALIASES: Mapping[str, tuple[str, ...]] = {
    "workers": ("WEB_CONCURRENCY",),
    "forwarded-allow-ips": ("FORWARDED_ALLOW_IPS",),
}
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# A STEREO_* variable this close to an option's is taken for a misspelling of it (and warned
# about); others belong to somebody else (stereo's own STEREO_HUB_FD, STEREO_UPGRADE_FROM, ...).
TYPO_CUTOFF = 0.8


class Kind(enum.Enum):
    VALUE = "value"  # one value, through the type function
    FLAG = "flag"  # on or off: store_true, store_false, store_const, --x/--no-x
    LIST = "list"  # several values: append (--bind), extend, nargs="+"
    COUNT = "count"  # -v -v: a whole number


class SourceError(ConfigError):
    """A value from the command line's neighbours (environment, config file) is malformed, or a
    config file names no option; the message names the value and its source."""


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option of the run parser, as configuration sees it."""

    key: str  # in a config file: "max-workers"; "app" for the positional MODULE:ATTR
    dest: str  # the attribute on the parsed namespace
    flag: str  # as messages name it: "--max-workers", "MODULE:ATTR"
    kind: Kind
    default: Any
    convert: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    on: Any = True  # a FLAG's value when set (store_false: False)
    numeric: bool = False  # a TOML number is accepted (its type function parses numbers)
    env: tuple[str, ...] = ()  # the STEREO_ name first, then the aliases


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # "command line", "environment", "file" or "default"
    where: str = ""  # the variable, or the file (and its table)

    def __str__(self) -> str:
        return f"{self.kind} {self.where}" if self.where else self.kind


COMMAND_LINE = Source("command line")
DEFAULT = Source("default")


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config file: its options table and how messages name it."""

    where: str  # "stereo.toml", or "pyproject.toml [tool.stereo]"
    table: Mapping[str, Any]


@dataclass(slots=True)
class Resolved:
    values: dict[str, Any] = field(default_factory=dict)  # dest -> value
    sources: dict[str, Source] = field(default_factory=dict)  # dest -> where it came from
    warnings: list[str] = field(default_factory=list)  # for stderr, not fatal


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def specs_from_parser(
    parser: argparse.ArgumentParser,
    *,
    numbers: Collection[Callable[[str], Any]] = (),
    exclude: Collection[str] = (),
) -> list[OptionSpec]:
    """The parser's options (help and version, and the dests in ``exclude``, left out).
    ``numbers``: the type functions that parse numbers, whose options accept TOML numbers
    (any other option wants a string, so that ``umask = 022`` cannot turn into decimal 18)."""
    specs: list[OptionSpec] = []
    for action in parser._actions:
        if action.dest in exclude or isinstance(
            action, argparse._HelpAction | argparse._VersionAction
        ):
            continue
        long = [text for text in action.option_strings if text.startswith("--")]
        key = long[0][2:] if long else action.dest
        flag = long[0] if long else (action.metavar if isinstance(action.metavar, str) else key)
        default = action.default
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)  # as argparse converts a string default
        specs.append(
            OptionSpec(
                key=key,
                dest=action.dest,
                flag=flag,
                kind=_kind(action),
                default=default,
                convert=action.type if callable(action.type) else None,
                choices=tuple(action.choices) if action.choices is not None else None,
                on=action.const if isinstance(action, argparse._StoreConstAction) else True,
                numeric=action.type in numbers,
                env=(env_name(key), *ENV_ALIASES.get(key, ())),
            )
        )
    for name, count in Counter(spec.dest for spec in specs).items():
        if count > 1:
            raise ValueError(f"several options store into {name!r}: configuration needs one each")
    return specs


def _kind(action: argparse.Action) -> Kind:
    if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):
        return Kind.FLAG  # store_true and store_false are store_const
    if isinstance(action, argparse._CountAction):
        return Kind.COUNT
    if isinstance(action, argparse._AppendAction):  # append, and extend (its subclass)
        per_use = None if isinstance(action, argparse._ExtendAction) else action.nargs
        if per_use is not None:
            raise ValueError(f"{action.option_strings}: no configuration form for nested lists")
        return Kind.LIST
    if isinstance(action, argparse._StoreAction):
        several = action.nargs in ("+", "*") or isinstance(action.nargs, int)
        return Kind.LIST if several else Kind.VALUE
    # A custom Action class: its own __call__ would be bypassed, so say so at once (every
    # `stereo run` reads the parser, and tests/test_config_*.py do on import).
    raise ValueError(
        f"{action.option_strings or action.dest}: no configuration form for this action"
    )


def resolve(
    specs: Sequence[OptionSpec],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    file: ConfigFile | None,
) -> Resolved:
    """Each option's value and source: ``given`` (dest -> value, what the command line set),
    else the environment (an empty variable counts as unset), else ``file``, else the default.
    Raises SourceError for the first bad value, or for a key in the file that is no option;
    STEREO_ variables that look like a misspelt option are only warned about (other programs
    may use the prefix too)."""
    result = Resolved()
    if file is not None:
        _check_keys(specs, file)
    for spec in specs:
        var = next((name for name in spec.env if environ.get(name, "").strip()), None)
        if spec.dest in given:
            value, source = given[spec.dest], COMMAND_LINE
        elif var is not None:
            text = environ[var]
            source = Source("environment", var)
            try:
                value = _from_env(spec, text)
            except _Bad as exc:
                raise SourceError(f"{var}={text!r} (environment): {exc.reason(text)}") from None
        elif file is not None and spec.key in file.table:
            raw = file.table[spec.key]
            source = Source("file", file.where)
            try:
                value = _from_toml(spec, raw)
            except _Bad as exc:
                raise SourceError(
                    f"{spec.key} = {toml_value(raw)} (file {file.where}): {exc.reason(raw)}"
                ) from None
        else:
            value, source = spec.default, DEFAULT
        result.values[spec.dest] = value
        result.sources[spec.dest] = source
    result.warnings.extend(_stray_variables(specs, environ))
    return result


class _Bad(Exception):
    """A value the option refuses; ``reason`` words it without repeating the value."""

    def reason(self, value: object) -> str:
        text = str(self)
        # The CLI's type functions start with the value ("'abc' is not a whole number"); the
        # message already shows it next to its source.
        for shown in (repr(value), repr(str(value)[:40])):
            if text.startswith(shown + " "):
                text = text[len(shown) + 1 :].removeprefix("is ")
        return text


def _convert(spec: OptionSpec, text: str) -> Any:
    """``text`` through the option's type function and choices, as argparse does."""
    value: Any = text
    if spec.convert is not None:
        try:
            value = spec.convert(text)
        except argparse.ArgumentTypeError as exc:
            raise _Bad(str(exc)) from None
        except (TypeError, ValueError):
            name = getattr(spec.convert, "__name__", repr(spec.convert))
            raise _Bad(f"invalid {name} value") from None
    if spec.choices is not None and value not in spec.choices:
        raise _Bad("must be one of " + ", ".join(str(choice) for choice in spec.choices))
    return value


def _from_env(spec: OptionSpec, text: str) -> Any:
    text = text.strip()
    if spec.kind is Kind.FLAG:
        word = text.lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise _Bad("must be 1 or 0, true or false, yes or no, on or off")
        return _flag(spec, word in TRUE_WORDS)
    if spec.kind is Kind.LIST:  # comma-separated, as FORWARDED_ALLOW_IPS
        return [_convert(spec, item.strip()) for item in text.split(",") if item.strip()]
    if spec.kind is Kind.COUNT:
        return _count(text)
    return _convert(spec, text)


def _from_toml(spec: OptionSpec, raw: Any) -> Any:
    if spec.kind is Kind.FLAG:
        if not isinstance(raw, bool):
            raise _Bad("must be true or false")
        return _flag(spec, raw)
    if spec.kind is Kind.LIST:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise _Bad("must be a string or a list of strings")
        return [_convert(spec, item) for item in items]
    if spec.kind is Kind.COUNT:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Bad("must be a whole number")
        return _count(str(raw))
    if isinstance(raw, str):
        return _convert(spec, raw)
    if spec.numeric and isinstance(raw, int | float) and not isinstance(raw, bool):
        return _convert(spec, repr(raw))  # the CLI's own parser, so its wording and range
    raise _Bad("must be a number or a string" if spec.numeric else "must be a string")


def _flag(spec: OptionSpec, on: bool) -> Any:
    if on:
        return spec.on
    # Off: --no-x's and store_true's False, store_false's True, store_const's default.
    return not spec.on if isinstance(spec.on, bool) else spec.default


def _count(text: str) -> int:
    if not text.isdecimal():
        raise _Bad("must be a whole number of at least 0")
    return int(text)


def _check_keys(specs: Sequence[OptionSpec], file: ConfigFile) -> None:
    keys = [spec.key for spec in specs]
    for key in file.table:
        if key not in keys:
            hint = difflib.get_close_matches(key, keys, n=1)
            also = f"; did you mean {hint[0]}?" if hint else ""
            raise SourceError(f"{key} (file {file.where}): not an option of stereo run{also}")


def _stray_variables(specs: Sequence[OptionSpec], environ: Mapping[str, str]) -> list[str]:
    known = {name for spec in specs for name in spec.env} | {CONFIG_ENV}
    # Compared without the prefix, which every name shares and would make them all look alike.
    options = {name.removeprefix(ENV_PREFIX): name for name in known if name.startswith(ENV_PREFIX)}
    warnings = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in known:
            continue
        hint = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), options, 1, TYPO_CUTOFF)
        if hint:
            warnings.append(
                f"{var} (environment): not an option of stereo run, ignored; did you mean"
                f" {options[hint[0]]}?"
            )
    return warnings


def blame(message: str, specs: Sequence[OptionSpec], resolved: Resolved) -> str:
    """A range error from ``Settings.check`` ("--workers 5000: must be ..."), with the source of
    the value it names when that is not the command line, where the user would look first:
    "--workers 5000 (environment WEB_CONCURRENCY): must be ..."."""
    for spec in specs:
        source = resolved.sources.get(spec.dest)
        if message.startswith(spec.flag + " ") and source not in (None, COMMAND_LINE, DEFAULT):
            head, _, reason = message.partition(": ")
            return f"{head} ({source}): {reason}"
    return message


def toml_value(value: Any) -> str:
    """``value`` as TOML writes it (any other object as the string of its str(): a Bind)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # nan, inf, -inf
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    # JSON strings are TOML basic strings, except that TOML wants DEL escaped too. Undecodable
    # bytes of a command line (lone surrogates) are shown escaped: stdout could not print them.
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def render(specs: Sequence[OptionSpec], resolved: Resolved) -> str:
    """What ``--print-config`` shows: a TOML file of every setting (one that ``-c`` would read
    back the same), each with its source as a comment; options left unset are commented out."""
    lines = []
    for spec in specs:
        value = resolved.values[spec.dest]
        if value is None:
            lines.append((f"# {spec.key} is not set", str(resolved.sources[spec.dest])))
        else:
            lines.append((f"{spec.key} = {toml_value(value)}", str(resolved.sources[spec.dest])))
    width = max((len(text) for text, _ in lines), default=0)
    header = (
        "# stereo run: each setting and where it came from"
        " (command line > environment > file > default)"
    )
    return "\n".join([header, *(f"{text:<{width}}  # {source}" for text, source in lines)]) + "\n"
