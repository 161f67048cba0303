"""Range checks for settings: one wording for every option, the master's and the ASGI front end's.

Each raises :class:`~stereo.errors.ConfigError` naming the option, before anything is bound.
"""

from __future__ import annotations

import math

from .errors import ConfigError

MAX_SECONDS = 86400.0  # timeouts: beyond a day, "never" was meant


def check_whole(option: str, value: int, low: int, high: int | None, why: str = "") -> None:
    """``value`` is a whole number from ``low`` to ``high`` (None: no upper bound), else
    ConfigError; ``why`` explains the bound."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"of at least {low}" if high is None else f"from {low} to {high}"
        reason = f" ({why})" if why else ""
        raise ConfigError(f"{option} {value}: must be a whole number {bound}{reason}")


def check_seconds(option: str, value: float, low: float = 0.0) -> None:
    """``value`` is a finite number of seconds above 0, from ``low`` and at most a day, else
    ConfigError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 < value <= MAX_SECONDS and value >= low)
    ):
        bound = f"from {low:g} to" if low else "above 0 and at most"
        raise ConfigError(f"{option} {value}: must be a number of seconds {bound} {MAX_SECONDS:g}")


def split_app_target(spec: str) -> tuple[str, str]:
    """``MODULE:ATTRIBUTE`` as (module, attribute), else ConfigError: checked by the CLI before
    anything is bound, and again by each worker as it imports the app."""
    module, colon, attribute = spec.partition(":")
    if not colon or not module.strip() or not attribute.strip():
        name = module.strip() or "main"
        raise ConfigError(
            f"app {spec!r} is not MODULE:ATTR (the module to import, then the app in it): e.g."
            f" '{name}:serve' for an async serve(worker), '{name}:app' for an ASGI app"
        )
    return module, attribute
