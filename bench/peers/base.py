"""The interface every peer implements."""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping

from ..apps._spec import Mode, Spec
from ..procs import Group

PYTHON = sys.executable


class Peer(ABC):
    name: str
    relay_name: str  # what the relaying process is, for the CPU column
    # The legs this peer runs: a variant that only differs in how fast it takes a burst (stereo's
    # batch API) would add nothing to the latency legs but their minutes.
    modes: tuple[Mode, ...] = ("relay", "latency")

    def missing(self) -> str | None:
        """Why this peer cannot run here, or None when it can."""
        return None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Set-up held across all of this peer's legs (e.g. a server setting, then restored)."""
        yield

    def endpoints(self, spec: Spec, work_dir: str) -> dict[str, str]:
        """Peer-specific addresses to put into the spec before start()."""
        return {}

    @abstractmethod
    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        """Start the leg's processes; return the pid of the relaying process."""
