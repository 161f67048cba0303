"""Drive an HTTP server with wrk, or with a small trio load generator when wrk is missing.

wrk runs with one thread: the machine's cores are shared with the server under test, and one wrk
thread keeps 64 connections busy far faster than a Python server answers them. The fallback is
itself Python and may be the bottleneck; the results say which tool produced them.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .procs import suite_env

WRK_THREADS = 1


@dataclass(frozen=True)
class Load:
    tool: str
    rps: float
    errors: str | None
    cpu_s: float = 0.0  # the load generator's own CPU time (user + system) over the run


def tool_name() -> str:
    return "wrk" if shutil.which("wrk") else "bench.loadgen (Python; wrk missing)"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drive(port: int, connections: int, seconds: float) -> Load:
    """Run the load generator to completion; its CPU is read off this process's reaped children."""
    before = _children_cpu_s()
    load = _run_tool(port, connections, seconds)
    return Load(load.tool, load.rps, load.errors, _children_cpu_s() - before)


def _run_tool(port: int, connections: int, seconds: float) -> Load:
    wrk = shutil.which("wrk")
    if wrk is None:
        return _loadgen(port, connections, seconds)
    out = subprocess.run(
        [
            wrk,
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = [m.group(0) for m in re.finditer(r"(Socket errors|Non-2xx).*", out)]
    return Load("wrk", float(rps.group(1)), "; ".join(errors) or None)


def _loadgen(port: int, connections: int, seconds: float) -> Load:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", str(port), str(connections), str(seconds)],
        env=suite_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    data = json.loads(out)
    return Load(tool_name(), float(data["rps"]), data["errors"] or None)
