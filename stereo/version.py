"""What ``stereo --version`` prints: the version of the installed distribution, ``trio-stereo``
(the name on the package index; the import name and the command stay ``stereo``), or, when this
code runs from a checkout that was never installed, the source tree's own ``__version__``.

Looked up only when asked for: reading distribution metadata scans ``sys.path``, which every
other ``stereo`` command (and each worker) would pay for nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import metadata
from typing import Any

DISTRIBUTION = "trio-stereo"


def stereo_version(distribution: str = DISTRIBUTION) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


class VersionAction(argparse.Action):
    """``-V`` / ``--version``: print ``stereo VERSION`` on stdout and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"stereo {stereo_version()}")  # on stdout, as argparse's own "version" action
        parser.exit()
