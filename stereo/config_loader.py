"""Reads ``stereo run``'s configuration from where it lives (the config file, the environment)
and resolves it under the command line with :mod:`stereo.config_sources`.

The file: ``-c FILE``, else ``$STEREO_CONFIG``, else the ``[tool.stereo]`` table of the
pyproject.toml in the current directory (only there: a server started in a directory must not pick
up the settings of some enclosing project). A file named pyproject.toml is read from its
``[tool.stereo]`` table, any other from its top level, as ruff reads ruff.toml and pyproject.toml.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config_sources import (
    CONFIG_ENV,
    ConfigFile,
    OptionSpec,
    Resolved,
    SourceError,
    resolve,
    specs_from_parser,
)

PYPROJECT = "pyproject.toml"
# The run options that say where the configuration is and what to do with it, not settings.
META_DESTS = frozenset({"config", "print_config"})


def run_subparser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices["run"]
            return found
    raise LookupError("the parser has no run command")


def load_run_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    explicit_file: str | None,
    environ: Mapping[str, str],
    cwd: Path,
    numbers: Collection[Callable[[str], Any]] = (),
) -> tuple[list[OptionSpec], Resolved]:
    """Every run option's value and source; SourceError for a bad file or value. ``parser`` has
    parsed ``argv`` already (so usage errors and --help are behind us); it is spent afterwards."""
    run = run_subparser(parser)
    specs = specs_from_parser(run, numbers=numbers, exclude=META_DESTS)
    given = _given_on_command_line(parser, run, argv)
    return specs, resolve(specs, given, environ, find_config_file(explicit_file, environ, cwd))


def _given_on_command_line(
    parser: argparse.ArgumentParser, run: argparse.ArgumentParser, argv: Sequence[str]
) -> dict[str, Any]:
    """What ``argv`` itself set: parsed again without defaults, so only those are left."""
    for action in run._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def find_config_file(
    explicit: str | None, environ: Mapping[str, str], cwd: Path
) -> ConfigFile | None:
    named = explicit or environ.get(CONFIG_ENV, "").strip()
    if not named:
        pyproject = cwd / PYPROJECT
        if not pyproject.is_file():
            return None
        table = _tool_stereo(_read(pyproject, PYPROJECT), PYPROJECT)
        return None if table is None else ConfigFile(f"{PYPROJECT} [tool.stereo]", table)
    path = cwd / named
    data = _read(path, named)
    if path.name != PYPROJECT:
        return ConfigFile(named, data)
    table = _tool_stereo(data, named)
    if table is None:
        raise SourceError(f"{named}: has no [tool.stereo] table")
    return ConfigFile(f"{named} [tool.stereo]", table)


def _read(path: Path, shown: str) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise SourceError(f"{shown}: cannot read the config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{shown}: not valid TOML: {exc}") from None


def _tool_stereo(data: dict[str, Any], shown: str) -> dict[str, Any] | None:
    tool = data.get("tool", {})
    table = tool.get("stereo") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise SourceError(f"{shown}: tool.stereo must be a table of options")
    return table
