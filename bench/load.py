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
WRK_MISSING = (
    "wrk is not installed; the asgi workload needs it (apt-get install wrk), or leave it out"
    " with --only"
)


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
    if shutil.which("wrk") is None:
        return _loadgen(port, connections, seconds)
    report = parse_wrk(_wrk(port, connections, seconds))
    return Load("wrk", report.rps, report.errors)


@dataclass(frozen=True)
class WrkReport:
    rps: float
    requests: int
    seconds: float
    p50_us: float | None  # from --latency's distribution; None without it
    p99_us: float | None
    errors: str | None  # wrk's "Socket errors" and "Non-2xx or 3xx responses" lines
    non_2xx: int


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_wrk(out: str) -> WrkReport:
    """wrk's report: rate, request count, and with ``--latency`` the p50 and p99."""
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    done = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", out, re.M)
    if rps is None or done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    percentiles = {
        m.group(1): _duration_us(m.group(2))
        for m in re.finditer(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", out, re.M)
    }
    errors = [m.group(0).strip() for m in re.finditer(r"^\s*(Socket errors|Non-2xx).*", out, re.M)]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return WrkReport(
        rps=float(rps.group(1)),
        requests=int(done.group(1)),
        seconds=_duration_us(done.group(2)) / 1e6,
        p50_us=percentiles.get("50"),
        p99_us=percentiles.get("99"),
        errors="; ".join(errors) or None,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def _wrk(port: int, connections: int, seconds: float, *options: str) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(WRK_MISSING)
    try:
        return _run_wrk(wrk, port, connections, seconds, *options)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"wrk failed: {(exc.stderr or exc.stdout).strip()}") from None


def _run_wrk(wrk: str, port: int, connections: int, seconds: float, *options: str) -> str:
    return subprocess.run(
        [
            wrk,
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{seconds:g}s",  # whole seconds: wrk refuses 0.5s
            *options,
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout


def run_wrk(port: int, connections: int, seconds: float) -> tuple[WrkReport, float]:
    """One ``wrk --latency`` run, and wrk's own CPU seconds over it."""
    before = _children_cpu_s()
    report = parse_wrk(_wrk(port, connections, seconds, "--latency"))
    return report, _children_cpu_s() - before


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
