"""What the run ran on: CPU, OS, interpreter and every peer's version, for docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def busy_note() -> str | None:
    """A warning when other work is loading the machine: the figures would be too low and noisy."""
    load1 = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load1 > 0.5 * cpus:
        return (
            f"the machine was busy: 1-minute load average {load1:.2f} on {cpus} CPUs "
            "(other processes compete with the legs; rerun on a quiet machine)"
        )
    return None


# The asgi workload's peers and the libraries its apps and load generator run on.
ASGI_DISTS = (
    "uvicorn",
    "uvloop",
    "httptools",
    "h11",
    "hypercorn",
    "fastapi",
    "starlette",
    "broadcaster",
    "wsproto",
)


def describe() -> dict[str, str]:
    lscpu = _run(["lscpu"])
    model = re.search(r"Model name:\s*(.+)", lscpu)
    info = {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cpus": str(os.cpu_count()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "stereo": _version("trio-stereo"),
        "stereo worker decoder": _decoder(),
        "stereo master relay": _relay(),
        "trio": _version("trio"),
        "cbor2": _version("cbor2"),
        "pyzmq": _version("pyzmq"),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        **{name: _version(name) for name in ASGI_DISTS},
        "node": _run(["node", "--version"]),
        "redis-server": _run(["redis-server", "--version"]).split(" sha=")[0],
        "wrk": _run(["wrk", "--version"]).splitlines()[0]
        if shutil.which("wrk")
        else "not installed",
    }
    try:
        import zmq

        info["libzmq"] = zmq.zmq_version()
    except ImportError:
        info["libzmq"] = "not installed"
    return info


def _relay() -> str:
    """Which data plane this checkout's masters relay on (docs/architecture.md)."""
    try:
        from stereo import accelerations
    except ImportError:
        return "stereo not installed, or older than its C relay"
    if not accelerations()["relay"]:
        return "Python (stereo/master/_relay.c not built, or STEREO_PURE_PYTHON set)"
    if os.environ.get("STEREO_RELAY") == "python":
        return "Python (STEREO_RELAY=python)"
    return "C data plane (stereo/master/_relay.c)"


def _decoder() -> str:
    """Whether the workers run the C decode loop (stereo._speedups) or the Python one."""
    try:
        from stereo import accelerated
    except ImportError:
        return "stereo not installed"
    return "C accelerator" if accelerated() else "pure Python (stereo._speedups not built)"
