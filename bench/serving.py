"""The shared-socket serving workload: one trio HTTP handler, plain and under ``stereo run``.

The harness binds the listening socket itself and hands it down as an inherited fd (``--bind
fd://N`` for stereo, an argument for the plain process), so no leg races for a port and every leg
gets the same socket options and backlog.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import psutil

from .apps.http_handler import DIR_ENV
from .load import drive
from .peers.stereo_peer import stereo_command, stereo_run
from .procs import Group, LegFailed, suite_env, tree_cpu_s
from .results import ServingResult

STARTUP_TIMEOUT = 60.0
BACKLOG = 1024


def run_serving_leg(
    workers: int, connections: int, seconds: float, reuse_port: bool = False
) -> ServingResult:
    """workers == 0 runs the plain single trio process. With ``reuse_port`` stereo binds the
    address itself (``--reuse-port`` needs a host:port bind); the harness only holds the port,
    with a bound, non-listening SO_REUSEPORT socket that takes no connections."""
    leg = "plain trio" if workers == 0 else f"stereo -w {workers}"
    if reuse_port:
        leg += " --reuse-port"
    result = ServingResult(leg=leg, workers=max(workers, 1), tool="")
    with (
        tempfile.TemporaryDirectory(prefix="stereo-bench-serve-") as work,
        _port_holder(reuse_port) as sock,
    ):
        fd = sock.fileno()
        port = sock.getsockname()[1]
        env = {**os.environ, DIR_ENV: work}
        if workers == 0:
            argv = [sys.executable, "-m", "bench.apps.plain_http", str(fd)]
            env = suite_env(env)
        else:
            bind = ["--reuse-port", "--bind", f"127.0.0.1:{port}"] if reuse_port else []
            argv = stereo_run(
                stereo_command(),
                "bench.apps.stereo_http:serve",
                workers,
                *(bind or ["--bind", f"fd://{fd}"]),
            )
        try:
            with Group(f"serving {leg}", work) as group:
                group.spawn(argv, name=leg, env=env, pass_fds=[] if reuse_port else [fd])
                group.wait("ready", max(workers, 1), STARTUP_TIMEOUT)
                server = psutil.Process(group.procs[-1].pid)
                cpu_before = tree_cpu_s(server)
                load = drive(port, connections, seconds)
                result.server_cpu_s = tree_cpu_s(server) - cpu_before
            result.tool, result.rps, result.errors = load.tool, load.rps, load.errors
            result.seconds, result.load_cpu_s = seconds, load.cpu_s
        except (LegFailed, OSError, RuntimeError, psutil.Error) as exc:
            result.error = str(exc)
            return result
        # The counters are final now: the group's close() stopped the server with SIGTERM.
        for path in sorted(Path(work).glob("serve-*.json")):
            data = json.loads(path.read_text())
            result.requests[str(data["id"])] = int(data["requests"])
    return result


def _port_holder(reuse_port: bool) -> socket.socket:
    """The leg's listening socket, or for --reuse-port a placeholder that keeps the port ours."""
    if not reuse_port:
        return socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
