"""Stereo itself: ``stereo run stereo.bench.apps.stereo_relay:serve -w W --no-console``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..apps._spec import Spec
from ..procs import Group
from .base import Peer

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_OUTBOX_LIMIT = 64 * 1024 * 1024
# A data message is ["d", sent_ns, payload]: a few bytes of CBOR around the payload.
ENVELOPE = 64


def stereo_command() -> list[str]:
    """The ``stereo`` console script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "stereo"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("stereo")
    return [found] if found else []


class Stereo(Peer):
    name = "stereo"
    relay_name = "stereo master"

    def missing(self) -> str | None:
        command = stereo_command()
        if not command:
            return "the stereo command is not installed (pip install -e .)"
        probe = subprocess.run(
            [*command, "run", "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            return f"`stereo run --help` fails: {(probe.stderr or probe.stdout).strip()[-300:]}"
        return None

    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        argv = [
            *stereo_command(),
            "run",
            "stereo.bench.apps.stereo_relay:serve",
            "-w",
            str(spec.workers),
            "--no-console",
        ]
        if spec.payload + ENVELOPE > DEFAULT_MAX_MESSAGE_SIZE:
            argv += ["--max-message-size", str(spec.payload + ENVELOPE)]
        # The master cuts off a worker that falls this far behind; the peers are run without
        # such a limit (ZeroMQ HWM 0, Redis pubsub limit lifted), so lift it to the whole stream.
        stream = spec.workers * spec.count * (spec.payload + ENVELOPE)
        if stream > DEFAULT_OUTBOX_LIMIT:
            argv += ["--outbox-limit", str(stream)]
        return group.spawn(argv, name="stereo master", env=env).pid
