"""Stereo itself: ``stereo run bench.apps.stereo_relay:serve -w W --app-dir ROOT --no-console``.

The same class runs ``stereo-batches`` (the app's ``serve_batches``: the batch API in place of
``async for msg``, relay legs only) and a ``--baseline``: another installation's ``stereo``
command with the same app, so one run compares this checkout with it, leg by leg, in turns.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..apps._spec import Mode, Spec
from ..procs import ROOT, Group
from .base import Peer

APP = "bench.apps.stereo_relay:serve"
BATCHES_APP = "bench.apps.stereo_relay:serve_batches"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_OUTBOX_LIMIT = 64 * 1024 * 1024
# A data message is ["d", sent_ns, payload]: a few bytes of CBOR around the payload.
ENVELOPE = 64
# Printed by the installation's own interpreter; -I keeps the working directory off sys.path.
WHICH_STEREO = """
import os, stereo
from importlib import metadata
try:
    installed = metadata.version("trio-stereo")
except metadata.PackageNotFoundError:  # an installation from before the rename
    installed = metadata.version("stereo")
fast = getattr(stereo, "accelerated", lambda: None)()
decoder = {True: "C accelerator", False: "pure Python decoder"}.get(fast, "decoder unknown")
print(f"stereo {installed} at {os.path.dirname(stereo.__file__)}, {decoder}")
"""


def stereo_command() -> list[str]:
    """The ``stereo`` console script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "stereo"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("stereo")
    return [found] if found else []


def stereo_run(command: list[str], app: str, workers: int, *options: str) -> list[str]:
    """``stereo run`` of one of the suite's apps. The suite is not installed, so ``--app-dir``
    points the workers at this checkout (they import the app after their own ``stereo``)."""
    return [*command, "run", app, "-w", str(workers), "--app-dir", ROOT, "--no-console", *options]


def installation(command: str) -> str:
    """Which stereo a ``stereo`` command runs, asked of the interpreter beside it."""
    python = Path(command).parent / "python"
    try:
        out = subprocess.run(
            [str(python), "-I", "-c", WHICH_STEREO],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{command} (its stereo is unknown: {exc})"
    return f"{command}: {out.stdout.strip()}"


class Stereo(Peer):
    def __init__(
        self,
        name: str = "stereo",
        command: list[str] | None = None,
        extra: Sequence[str] = (),
        app: str = APP,
        modes: tuple[Mode, ...] = ("relay", "latency"),
    ) -> None:
        self.name = name
        self.app = app
        self.modes = modes
        self.extra = list(extra)  # more `stereo run` options (bench/metrics.py: --metrics)
        self.relay_name = f"{name} master"
        self.command = stereo_command() if command is None else command

    def missing(self) -> str | None:
        if not self.command:
            return "the stereo command is not installed (pip install -e .)"
        try:
            probe = subprocess.run(
                [*self.command, "run", "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError as exc:
            return f"cannot run {self.command[0]}: {exc}"
        if probe.returncode != 0:
            return f"`stereo run --help` fails: {(probe.stderr or probe.stdout).strip()[-300:]}"
        if "--app-dir" not in probe.stdout:
            return f"{self.command[0]} has no `stereo run --app-dir`, which loads the suite's app"
        return None

    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        options = []
        if spec.payload + ENVELOPE > DEFAULT_MAX_MESSAGE_SIZE:
            options += ["--max-message-size", str(spec.payload + ENVELOPE)]
        # The master cuts off a worker that falls this far behind; the peers are run without
        # such a limit (ZeroMQ HWM 0, Redis pubsub limit lifted), so lift it to the whole stream.
        stream = spec.workers * spec.count * (spec.payload + ENVELOPE)
        if stream > DEFAULT_OUTBOX_LIMIT:
            options += ["--outbox-limit", str(stream)]
        options += self.extra
        argv = stereo_run(self.command, self.app, spec.workers, *options)
        return group.spawn(argv, name=self.relay_name, env=env).pid
