"""Value syntax shared by `stereo run`'s option groups. Syntax only: every range is
:meth:`stereo.master.config.Settings.check`'s, in one place for every source (command line,
environment, config file)."""

from __future__ import annotations

import argparse


def whole(text: str) -> int:
    """Syntax only: every range is :meth:`Settings.check`'s, in one place for every caller."""
    try:
        return int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").isdecimal()
        problem = "is far too large" if digits else "is not a whole number"
        raise argparse.ArgumentTypeError(f"{text[:40]!r} {problem}") from None


def number(text: str) -> float:
    """Syntax only, as :func:`whole` (NaN and infinities parse; the check refuses them)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
