"""The asgi workload: stereo's ASGI front end against the servers users would pick instead.

Two "hello" legs with one worker each, driven by wrk (``-t1``: the machine's two cores are
shared with the server), and a WebSocket fan-out with four workers driven by bench.wsload.
Every server is handed the harness's own listening socket (stereo and hypercorn as ``fd://N``,
uvicorn as ``--fd N``), so none races for a port and each is ready to take connections (they
queue in the backlog) from the moment its app's lifespan startup prints ``@bench ready``.
Server CPU is the user + system time of the server's process tree (and, for broadcaster, of
redis-server), read before and after the measured span.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psutil

from .apps._spec import CHANNEL_ENV, SUBSCRIBER_LIMIT_ENV
from .load import run_wrk
from .peers.stereo_peer import Stereo, stereo_command, stereo_run
from .plan import Plan
from .procs import Group, LegFailed, suite_env, tree_cpu_s
from .results import AsgiHttpResult, FanoutResult, median_round

STARTUP_TIMEOUT = 60.0
BACKLOG = 1024
REDIS = ("127.0.0.1", 6379)

RAW, FASTAPI = "raw ASGI", "FastAPI"
APPS = {RAW: "bench.apps.asgi_hello:raw", FASTAPI: "bench.apps.asgi_hello:fastapi_app"}
STEREO = "stereo"
UVICORN_FAST = "uvicorn httptools+uvloop"
UVICORN_H11 = "uvicorn h11"
HYPERCORN_TRIO = "hypercorn trio"
HYPERCORN_ASYNCIO = "hypercorn asyncio"
BROADCASTER = "uvicorn + broadcaster"
# The HTTP legs, in the order they take their turns within a round.
HTTP_LEGS = (
    (RAW, STEREO),
    (RAW, UVICORN_FAST),
    (RAW, UVICORN_H11),
    (FASTAPI, STEREO),
    (FASTAPI, HYPERCORN_TRIO),
    (FASTAPI, HYPERCORN_ASYNCIO),
    (FASTAPI, UVICORN_H11),
    (FASTAPI, UVICORN_FAST),
)
FANOUT_SERVERS = (STEREO, BROADCASTER)


@dataclass(frozen=True)
class Server:
    """How to start one server on an inherited listening socket."""

    modules: tuple[str, ...]  # what it needs installed, besides stereo for stereo
    argv: Callable[[str, int, int], list[str]]  # (app, fd, workers) -> command line
    suite_on_path: bool = True  # False for stereo: --app-dir finds the suite (see procs.py)


def _stereo(app: str, fd: int, workers: int) -> list[str]:
    options = ("--interface", "asgi", "--bind", f"fd://{fd}", "--no-access-log")
    return stereo_run(stereo_command(), app, workers, *options)


def _uvicorn(http: str, loop: str) -> Callable[[str, int, int], list[str]]:
    def argv(app: str, fd: int, workers: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", app, "--fd", str(fd), "--workers", str(workers)),
            *("--http", http, "--loop", loop, "--ws", "wsproto", "--no-access-log"),
        ]

    return argv


def _hypercorn(worker_class: str) -> Callable[[str, int, int], list[str]]:
    def argv(app: str, fd: int, workers: int) -> list[str]:
        # Hypercorn's access log is off unless --access-logfile is given.
        return [
            *(sys.executable, "-m", "hypercorn", "-k", worker_class, "-w", str(workers)),
            *("--bind", f"fd://{fd}", app),
        ]

    return argv


SERVERS = {
    STEREO: Server((), _stereo, suite_on_path=False),
    UVICORN_FAST: Server(("uvicorn", "httptools", "uvloop"), _uvicorn("httptools", "uvloop")),
    UVICORN_H11: Server(("uvicorn", "h11"), _uvicorn("h11", "asyncio")),
    HYPERCORN_TRIO: Server(("hypercorn", "trio"), _hypercorn("trio")),
    HYPERCORN_ASYNCIO: Server(("hypercorn",), _hypercorn("asyncio")),
    BROADCASTER: Server(
        ("uvicorn", "httptools", "uvloop", "broadcaster", "redis", "wsproto"),
        _uvicorn("httptools", "uvloop"),
    ),
}


def missing(server: str, app: str | None = None) -> str | None:
    """Why ``server`` (serving ``app``) cannot run here, or None."""
    if server == STEREO:
        reason = Stereo().missing()
        if reason is not None:
            return reason
    modules = SERVERS[server].modules + (("fastapi",) if app == FASTAPI else ())
    absent = [m for m in modules if find_spec(m) is None]
    if absent:
        return f"not installed: {', '.join(absent)}"
    if server == BROADCASTER:
        try:
            socket.create_connection(REDIS, timeout=2).close()
        except OSError as exc:
            return f"no Redis server at {REDIS[0]}:{REDIS[1]} ({exc})"
    return None


def _spawn(
    group: Group, server: str, app: str, sock: socket.socket, workers: int, env: Mapping[str, str]
) -> psutil.Process:
    spec = SERVERS[server]
    fd = sock.fileno()
    proc = group.spawn(
        spec.argv(app, fd, workers),
        name=server,
        env=suite_env(env) if spec.suite_on_path else env,
        pass_fds=[fd],
    )
    group.wait("ready", workers, STARTUP_TIMEOUT)  # one per worker, from its lifespan startup
    return psutil.Process(proc.pid)


def listening_socket() -> socket.socket:
    """The leg's socket, with TCP_NODELAY set for the connections it accepts to inherit (Linux).

    ``uvicorn --fd`` rebuilds the socket as AF_UNIX (``socket.fromfd(fd, AF_UNIX, ...)``), so
    asyncio, which sets TCP_NODELAY only on what it takes for TCP, leaves Nagle on: a response
    written as head then body then waits for the client's delayed ACK, about 40 ms. Every
    server here sets it itself when it binds its own port; this gives them all the same.
    """
    sock = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run_http_leg(
    app: str, server: str, connections: int, seconds: float, warmup: float
) -> AsgiHttpResult:
    result = AsgiHttpResult(app=app, server=server)
    with (
        tempfile.TemporaryDirectory(prefix="stereo-bench-asgi-") as work,
        listening_socket() as sock,
    ):
        port = sock.getsockname()[1]
        try:
            with Group(f"asgi {app} {server}", work) as group:
                tree = _spawn(group, server, APPS[app], sock, 1, os.environ)
                # Unrecorded: the first requests pay for imports, caches and the JIT-less warm-up
                # of every code path, which is not what the table is about.
                run_wrk(port, connections, warmup)
                before = tree_cpu_s(tree)
                report, result.load_cpu_s = run_wrk(port, connections, seconds)
                result.server_cpu_s = tree_cpu_s(tree) - before
        except (LegFailed, OSError, RuntimeError, subprocess.SubprocessError, psutil.Error) as exc:
            result.error = str(exc)
            return result
    result.rps, result.requests, result.seconds = report.rps, report.requests, report.seconds
    result.p50_us, result.p99_us, result.errors = report.p50_us, report.p99_us, report.errors
    if report.non_2xx:
        result.error = f"{report.non_2xx} of {report.requests} answers were not 2xx/3xx"
    return result


def _redis_process() -> psutil.Process | None:
    """redis-server, whose CPU the broadcaster leg costs too (it may serve others: see docs)."""
    import redis  # the broadcaster leg's dependency, so only imported for it

    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        pid = int(client.info("server")["process_id"])
        return psutil.Process(pid)
    except (redis.RedisError, psutil.Error, KeyError, ValueError):
        return None
    finally:
        client.close()


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return times.user + times.system


@dataclass(frozen=True)
class FanoutPlan:
    workers: int
    receivers: int
    count: int  # burst: messages at full speed
    rate: int  # paced: messages a second
    paced_count: int
    timeout: float  # per load generator run


def run_fanout_round(server: str, plan: FanoutPlan) -> list[FanoutResult]:
    """One server started once, then a burst run and a paced run against it."""
    app = "bench.apps.ws_stereo:app" if server == STEREO else "bench.apps.ws_broadcaster:app"
    env = {
        **os.environ,
        CHANNEL_ENV: f"stereo-bench-{uuid.uuid4().hex}",  # the Redis server may be shared
        SUBSCRIBER_LIMIT_ENV: str(max(plan.count, plan.paced_count)),
    }
    runs = (("burst", plan.count), ("paced", plan.paced_count))
    results = [
        FanoutResult(server, mode, plan.workers, plan.receivers, count) for mode, count in runs
    ]
    with (
        tempfile.TemporaryDirectory(prefix="stereo-bench-fanout-") as work,
        listening_socket() as sock,
    ):
        port = sock.getsockname()[1]
        try:
            with Group(f"fanout {server}", work) as group:
                tree = _spawn(group, server, app, sock, plan.workers, env)
                broker = _redis_process() if server == BROADCASTER else None
                for result in results:
                    _fanout_run(group, tree, broker, port, result, plan, Path(work))
        except (LegFailed, OSError, RuntimeError, ValueError, psutil.Error) as exc:
            for result in results:
                if result.error is None and not result.deliveries:
                    result.error = str(exc)
    return results


def _fanout_run(
    group: Group,
    tree: psutil.Process,
    broker: psutil.Process | None,
    port: int,
    result: FanoutResult,
    plan: FanoutPlan,
    work: Path,
) -> None:
    out = work / f"{result.mode}.json"
    argv = [
        *(sys.executable, "-m", "bench.wsload", str(port), result.mode, str(result.count)),
        *(str(out), "--rate", str(plan.rate), "--receivers", str(plan.receivers)),
        *("--workers", str(plan.workers), "--timeout", f"{plan.timeout:g}"),
    ]
    load = group.spawn(argv, name=f"wsload {result.mode}", env=suite_env())
    # The generator prints go once every receiver is placed and subscribed, and done after the
    # last receipt (or its timeout): the CPU figures cover exactly the messages' span.
    group.wait("go", 1, plan.timeout + STARTUP_TIMEOUT)
    server0, broker0 = tree_cpu_s(tree), _cpu(broker)
    group.wait("done", 1, plan.timeout + STARTUP_TIMEOUT)
    result.server_cpu_s = tree_cpu_s(tree) - server0
    if broker is not None:
        result.broker_cpu_s = _cpu(broker) - broker0
    group.wait_exit(load, 30)
    data = json.loads(out.read_text())
    result.error = data["error"]
    result.deliveries = sum(data.get("received", []))
    result.duplicates = data.get("duplicates", 0)
    result.wall_s = data.get("wall_s", 0.0)
    result.load_cpu_s = data.get("cpu_s", 0.0)
    result.spread = data.get("spread", {})
    result.connections = data.get("connections", 0)
    result.p50_us, result.p99_us = data.get("p50_us"), data.get("p99_us")
    result.max_us = data.get("max_us")


def run_asgi(
    plan: Plan, repeat: int, progress: Callable[[str], None], loud: Callable[[str], None]
) -> tuple[list[AsgiHttpResult], list[FanoutResult]]:
    """Every leg that can run here, in turns round after round (as the relay's peers take
    theirs), each figure the median round: req/s for HTTP, deliveries/s for the burst, p99 for
    the paced run (the figure its target is about)."""
    http_legs = []
    for app, server in HTTP_LEGS:
        reason = missing(server, app)
        if reason is None:
            http_legs.append((app, server))
        else:
            loud(f"asgi {app} {server}: {reason}")
    fanout_servers = []
    for server in FANOUT_SERVERS:
        reason = missing(server)
        if reason is None:
            fanout_servers.append(server)
        else:
            loud(f"asgi fan-out {server}: {reason}")
    fanout = FanoutPlan(
        plan.fanout_workers,
        plan.fanout_receivers,
        plan.fanout_count,
        plan.fanout_rate,
        plan.fanout_paced_count,
        plan.fanout_timeout,
    )
    http: dict[tuple[str, str], list[AsgiHttpResult]] = {leg: [] for leg in http_legs}
    bursts: dict[str, list[FanoutResult]] = {s: [] for s in fanout_servers}
    paced: dict[str, list[FanoutResult]] = {s: [] for s in fanout_servers}
    for _ in range(repeat):
        for app, server in http_legs:
            row = run_http_leg(
                app, server, plan.asgi_connections, plan.asgi_seconds, plan.asgi_warmup
            )
            progress(
                f"asgi {app} {server} -> {row.rps:,.0f} req/s p99 {row.p99_us} µs"
                f" {row.error or row.errors or ''}"
            )
            http[app, server].append(row)
        for server in fanout_servers:
            burst, steady = run_fanout_round(server, fanout)
            progress(
                f"fan-out {server} -> {burst.rate:,.0f} deliveries/s, lost {burst.lost};"
                f" paced p50 {steady.p50_us} p99 {steady.p99_us} µs, lost {steady.lost}"
                f" {burst.error or steady.error or ''}"
            )
            bursts[server].append(burst)
            paced[server].append(steady)
    rows = [
        median_round(http[leg], lambda r: r.rps if r.error is None else -1.0) for leg in http_legs
    ]
    fanout_rows = [
        median_round(bursts[s], lambda r: r.rate if r.error is None else -1.0)
        for s in fanout_servers
    ] + [
        median_round(paced[s], lambda r: r.p99_us if r.ok and r.p99_us else float("inf"))
        for s in fanout_servers
    ]
    return rows, fanout_rows
