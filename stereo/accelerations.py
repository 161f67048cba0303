"""Which parts of stereo run in C: the optional extensions setup.py builds when it can.

Two parts, each with a pure Python twin that is the reference and the fallback:

- ``intake``: the worker's broadcast decoder (stereo/wire/_speedups.c);
- ``relay``: the master's data plane (stereo/master/_relay.c, driven by cplane.py). Built is not
  the same as in use: a bridged master, or one run with ``STEREO_RELAY=python``, relays in
  Python; its ``stats`` say which plane relays (``relay``).

``STEREO_PURE_PYTHON=1`` turns both off.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load_relay() -> ModuleType | None:
    """The C relay's module, unless disabled or not built."""
    if os.environ.get("STEREO_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module("stereo.master._relay")
    except ImportError:
        return None


def accelerations() -> dict[str, bool]:
    """Whether each part is built in C and enabled: ``{"intake": ..., "relay": ...}``."""
    from .wire.protocol import accelerated

    return {"intake": accelerated(), "relay": load_relay() is not None}
