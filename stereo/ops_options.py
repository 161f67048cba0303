"""`stereo run`'s options for operations (docs/operations.md): who the workers run as
(--user, --group, --umask), where (--chdir), the pid file (--pid) and reloading on code changes
(--reload, --reload-dir, --reload-include, --reload-exclude). Syntax here; ranges and existence
are :meth:`stereo.master.config.Settings.check`'s.
"""

from __future__ import annotations

import argparse

from .master.config import Settings
from .master.privileges import parse_umask


def _umask(text: str) -> int:
    try:
        return parse_umask(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ops_options(run: argparse.ArgumentParser) -> None:
    ops = run.add_argument_group("process and development (docs/operations.md)")
    ops.add_argument(
        "--user",
        metavar="USER",
        default=None,
        help="run the workers (and the bridge) as this user, a name or uid, with its groups;"
        " the master binds first, as root (default: the master's user)",
    )
    ops.add_argument(
        "--group",
        metavar="GROUP",
        default=None,
        help="run the workers as this group, a name or gid (default: --user's primary group)",
    )
    ops.add_argument(
        "--chdir",
        metavar="DIR",
        default=None,
        help="change to DIR before loading or binding anything; relative paths are taken from"
        " it (default: stay)",
    )
    ops.add_argument(
        "--umask",
        type=_umask,
        default=None,
        metavar="MASK",
        help="octal umask of the workers, e.g. 027 (default: the master's)",
    )
    ops.add_argument(
        "--pid",
        dest="pid_file",
        metavar="FILE",
        default=None,
        help="write the master's pid to FILE; refuse to start while a live master holds it",
    )
    ops.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="for development: restart the workers, one at a time, when a watched file changes",
    )
    ops.add_argument(
        "--reload-dir",
        dest="reload_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="directory to watch; repeatable (default: --app-dir)",
    )
    ops.add_argument(
        "--reload-include",
        action="append",
        default=[],
        metavar="GLOB",
        help="files that count, on top of *.py; repeatable",
    )
    ops.add_argument(
        "--reload-exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="files and directories left out, on top of .* .py[cod] .sw.* ~*; repeatable",
    )


def apply_ops_options(args: argparse.Namespace, settings: Settings) -> None:
    settings.user = args.user
    settings.group = args.group
    settings.chdir = args.chdir
    settings.umask = args.umask
    settings.pid_file = args.pid_file
    settings.reload = args.reload
    settings.reload_dirs = args.reload_dirs
    settings.reload_include = args.reload_include
    settings.reload_exclude = args.reload_exclude
