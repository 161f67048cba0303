"""The bridge workload: stereo's scale-out across two hubs against the socket.io-style design.

Each broker is private, started by the harness on a free loopback port (never a shared server:
the leg flushes it between runs, and its settings are the defaults), and carries two systems:

- Redis (redis-server): stereo, two ``stereo run bench.apps.bridge_stereo:serve -w W --bridge
  redis://... --bridge-name NAME`` masters, a fresh NAME per run (docs/scale-out.md: one broker
  entry per batch of frames); and the peer, ``redis pub/sub``: two "hubs" of W plain processes
  (bench.apps.bridge_pubsub), each PUBLISHing every message on one channel and SUBSCRIBEd to it.
- NATS (nats-server -js, its store in a temporary directory): stereo with ``--bridge nats://...``
  (a JetStream stream); and ``nats pub/sub``: core NATS, one message per publish
  (bench.apps.bridge_natspubsub).

A round is a burst (every worker sends ``count`` messages at full speed: deliveries/s, loss),
then a paced run (``rate`` msg/s over all senders: cross-hub latency), during which a harness
thread measures the broker's own PING round trip on a connection of its own (Redis's inline
PING, NATS's protocol PING: what a client's flush waits for), the floor under any cross-hub
figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .apps._bridge import BRIDGE_SPEC_ENV, HUB_ENV, BridgeMode, BridgeSpec
from .apps._spec import ID_ENV
from .peers.base import PYTHON
from .peers.stereo_peer import stereo_command, stereo_run
from .plan import Plan
from .procs import Group, LegFailed, suite_env
from .results import BridgeResult, median_round, percentile

STEREO = "stereo"
PUBSUB = "redis pub/sub"
NATS_PUBSUB = "nats pub/sub"
REDIS_SERVER = "/usr/bin/redis-server"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
HUBS = 2
PAYLOAD = 64
STARTUP_TIMEOUT = 60.0
BROKER_START = 10.0
PING_EVERY = 0.005  # the RTT probe's pace: 200 PINGs a second, light beside the paced load


@dataclass(frozen=True)
class BridgePlan:
    per_hub: int
    count: int  # burst: messages per sender
    rate: int  # paced: msg/s over all senders
    seconds: int  # paced: how long
    timeout: float  # per run, in every worker

    @classmethod
    def of(cls, plan: Plan) -> BridgePlan:
        return cls(
            plan.bridge_per_hub,
            plan.bridge_count,
            plan.bridge_rate,
            plan.bridge_seconds,
            plan.bridge_timeout,
        )

    def paced_count(self) -> int:
        """Messages per sender in the paced run."""
        return max(1, self.rate * self.seconds // (HUBS * self.per_hub))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker(Protocol):
    """A private broker of the leg, started on entry and stopped on exit."""

    name: str
    systems: tuple[str, ...]  # stereo first, then the peers that run on this broker
    # What the PING probe sends once on its connection before it times PINGs.
    hello: bytes

    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int: ...

    def __enter__(self) -> Broker: ...

    def __exit__(self, *exc: object) -> None: ...

    def flush(self) -> None:
        """Empty it between runs, so no run pays for the previous one's data."""
        ...


class RedisBroker:
    """A private redis-server without persistence, on loopback, killed on exit."""

    name = "redis"
    systems: tuple[str, ...] = (STEREO, PUBSUB)
    hello = b""

    def __init__(self, work: str) -> None:
        self.work = work
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        return None if os.access(REDIS_SERVER, os.X_OK) else f"no {REDIS_SERVER}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisBroker:
        self.process, self.port = _launch(
            self.work,
            "redis",
            lambda port: [
                *(REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.work),
            ],
            self.hello,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            _stop(self.process)

    def flush(self) -> None:
        """Empty between runs, so no run pays for the previous one's stream."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            if not sock.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")


class NatsBroker:
    """A private nats-server -js on loopback, its store in the leg's temporary directory,
    killed on exit."""

    name = "nats"
    systems: tuple[str, ...] = (STEREO, NATS_PUBSUB)
    # The server greets with INFO; a client says CONNECT before anything else.
    hello = b'CONNECT {"verbose":false,"pedantic":false}\r\n'

    def __init__(self, work: str) -> None:
        self.work = work
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        if not os.access(NATS_SERVER, os.X_OK):
            return f"no {NATS_SERVER}"
        try:
            import nats  # noqa: F401 (the bridge process and the peer import it)
        except ImportError:
            return "nats-py is not installed (pip install -e '.[nats]')"
        return None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> NatsBroker:
        work = Path(self.work)
        self.process, self.port = _launch(
            self.work,
            "nats",
            lambda port: [
                *(NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port)),
                *("-sd", str(work / f"nats-{port}")),
            ],
            self.hello,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            _stop(self.process)

    def flush(self) -> None:
        """Delete every stream (stereo's runs each make one)."""
        asyncio.run(self._delete_streams())

    async def _delete_streams(self) -> None:
        import nats

        async with asyncio.timeout(30):
            nc = await nats.connect(self.url)
            try:
                js = nc.jetstream()
                for info in await js.streams_info():
                    await js.delete_stream(info.config.name or "")
            finally:
                await nc.close()


BROKERS: tuple[type[RedisBroker] | type[NatsBroker], ...] = (RedisBroker, NatsBroker)


def _launch(
    work: str, name: str, argv: Callable[[int], list[str]], hello: bytes
) -> tuple[subprocess.Popen[bytes], int]:
    """A private broker ``name`` on a free port, logging into ``work``, once it answers PING.
    The free port may be taken between the probe and the bind: a few tries."""
    for _ in range(5):
        port = free_port()
        with open(Path(work) / f"{name}-{port}.log", "wb") as log:
            process = subprocess.Popen(
                argv(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if _wait_pong(port, process, hello):
            return process, port
        _stop(process)
    raise RuntimeError(f"{argv(0)[0]} did not start (see {work})")


def _hello(sock: socket.socket, hello: bytes) -> None:
    """Open the protocol on a fresh connection: NATS's INFO line read and CONNECT sent."""
    if hello:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            greeting += chunk
        sock.sendall(hello)


def _pong(sock: socket.socket) -> bytes:
    """PING sent, the reply line (Redis ``+PONG``, NATS ``PONG``)."""
    sock.sendall(b"PING\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("the broker closed the probe's connection")
        reply += chunk
    return reply


def _wait_pong(port: int, process: subprocess.Popen[bytes], hello: bytes) -> bool:
    deadline = time.monotonic() + BROKER_START
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                _hello(sock, hello)
                if _pong(sock).lstrip(b"+").startswith(b"PONG"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


class PingProbe:
    """The broker's round trip, measured by a harness thread on its own connection while a
    paced run goes on: one PING, one PONG, every PING_EVERY seconds."""

    def __init__(self, port: int, hello: bytes) -> None:
        self.port = port
        self.hello = hello
        self.rtts_ns: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: str | None = None

    def __enter__(self) -> PingProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _hello(sock, self.hello)
                while not self._stop.wait(PING_EVERY):
                    t0 = time.monotonic_ns()
                    _pong(sock)
                    self.rtts_ns.append(time.monotonic_ns() - t0)
        except OSError as exc:
            self.error = f"PING probe: {exc}"


def missing(system: str, broker: str) -> str | None:
    """Why a system cannot run on ``broker`` here, or None (NatsBroker.missing checks
    nats-py)."""
    if system == STEREO:
        command = stereo_command()
        if not command:
            return "the stereo command is not installed (pip install -e .)"
        if broker == "nats":
            return None
        try:
            import coredis  # noqa: F401 (the bridge process imports it)
        except ImportError:
            return "coredis is not installed (pip install -e '.[redis]')"
        return None
    if system == NATS_PUBSUB:
        try:
            import cbor2
        except ImportError:
            return "cbor2 is not installed (pip install -e '.[bench]')"
        return None
    try:
        import cbor2  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "redis-py or cbor2 is not installed (pip install -e '.[bench]')"
    return None


def run_bridge_run(system: str, broker: Broker, plan: BridgePlan, mode: BridgeMode) -> BridgeResult:
    """One run of one system on the (flushed) broker; failures become the row's error."""
    count = plan.count if mode == "burst" else plan.paced_count()
    rate = plan.rate if mode == "paced" else 0
    result = BridgeResult(system, broker.name, mode, HUBS, plan.per_hub, count, rate)
    tag = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="stereo-bench-bridge-") as work:
        spec = BridgeSpec(
            mode, HUBS, plan.per_hub, count, PAYLOAD, rate, work, plan.timeout, broker.url,
            f"stereo-bench-{tag}",
        )  # fmt: skip
        env = {**os.environ, BRIDGE_SPEC_ENV: spec.to_json()}
        senders = HUBS * plan.per_hub
        probe: PingProbe | None = None
        try:
            broker.flush()
            with Group(f"bridge {system} {mode}", work) as group:
                _spawn(group, system, broker, plan.per_hub, tag, env)
                group.wait("go", senders, STARTUP_TIMEOUT)
                if mode == "paced":
                    with PingProbe(broker.port, broker.hello) as probe:
                        group.wait("done", senders, plan.timeout + 30)
                else:
                    group.wait("done", senders, plan.timeout + 30)
        except (LegFailed, OSError, RuntimeError) as exc:
            result.error = str(exc)
            return result
        reports = [json.loads(p.read_text()) for p in Path(work).glob("bridge-worker-*.json")]
    reduce_reports(result, reports)
    if probe is not None:
        rtts = sorted(probe.rtts_ns)
        if rtts:
            result.rtt_p50_us = percentile(rtts, 50) / 1e3
            result.rtt_p99_us = percentile(rtts, 99) / 1e3
        if probe.error is not None:
            result.note = "; ".join(filter(None, (result.note, probe.error)))
    return result


def _spawn(
    group: Group, system: str, broker: Broker, per_hub: int, tag: str, env: dict[str, str]
) -> None:
    for hub in range(1, HUBS + 1):
        hub_env = {**env, HUB_ENV: str(hub)}
        if system == STEREO:
            options = ("--bridge", broker.url, "--bridge-name", f"bench-{tag}")
            argv = stereo_run(stereo_command(), "bench.apps.bridge_stereo:serve", per_hub, *options)
            group.spawn(argv, name=f"stereo hub {hub}", env=hub_env)
            continue
        app = (
            "bench.apps.bridge_natspubsub" if system == NATS_PUBSUB else "bench.apps.bridge_pubsub"
        )
        for worker in range(1, per_hub + 1):
            group.spawn(
                [PYTHON, "-m", app],
                name=f"{system} hub {hub} worker {worker}",
                env=suite_env({**hub_env, ID_ENV: str(worker)}),
            )


def reduce_reports(result: BridgeResult, reports: list[dict[str, Any]]) -> None:
    """The workers' ledgers into one row. A receiver that wrote nothing (it died) counts as
    having missed everything, so it cannot make a run look lossless."""
    result.deliveries = sum(int(r["distinct"]) for r in reports)
    result.duplicates = sum(int(r["duplicates"]) for r in reports)
    result.reordered = sum(int(r["reordered"]) for r in reports)
    result.reconnects = sum(int(r.get("reconnects", 0)) for r in reports)
    result.missing = result.expected - result.deliveries
    starts = [int(r["start_ns"]) for r in reports if r["start_ns"]]
    lasts = [int(r["last_ns"]) for r in reports if r["last_ns"]]
    if starts and lasts:
        result.wall_s = (max(lasts) - min(starts)) / 1e9
    notes = []
    if len(reports) < result.senders:
        notes.append(
            f"{result.senders - len(reports)} of {result.senders} workers reported nothing"
        )
    foreign = sum(int(r.get("foreign", 0)) for r in reports)
    if foreign:
        notes.append(f"{foreign} messages of no sender of this run")
    if notes:
        result.note = "; ".join(notes)
    latencies = sorted(int(v) for r in reports for v in r["latencies_ns"])
    if latencies:
        result.p50_us = percentile(latencies, 50) / 1e3
        result.p99_us = percentile(latencies, 99) / 1e3
        result.max_us = latencies[-1] / 1e3


def run_bridge(
    plan: Plan, repeat: int, progress: Callable[[str], None], loud: Callable[[str], None]
) -> list[BridgeResult]:
    """Every broker and system that can run here, in turns round after round, each figure the
    median round: deliveries/s for the burst (a lossy or failed run counts as the slowest), p99
    for the paced run."""
    bplan = BridgePlan.of(plan)
    runs: dict[tuple[str, str, str], list[BridgeResult]] = {}
    with tempfile.TemporaryDirectory(prefix="stereo-bench-broker-") as work, ExitStack() as stack:
        brokers: list[tuple[Broker, list[str]]] = []
        for kind in BROKERS:
            if (reason := kind.missing()) is not None:
                loud(f"bridge {kind.name}: {reason}")
                continue
            systems = []
            for system in kind.systems:
                if (reason := missing(system, kind.name)) is None:
                    systems.append(system)
                else:
                    loud(f"bridge {kind.name} {system}: {reason}")
            broker: Broker = kind(work)
            brokers.append((stack.enter_context(broker), systems))
        for _ in range(repeat):
            for broker, systems in brokers:
                for system in systems:
                    for mode in ("burst", "paced"):
                        row = run_bridge_run(system, broker, bplan, mode)
                        runs.setdefault((broker.name, system, mode), []).append(row)
                        progress(_line(row))
    rows = []
    for (_, _, mode), group in runs.items():
        if mode == "burst":
            rows.append(median_round(group, lambda r: r.deliveries_per_s if r.ok else -1.0))
        else:
            rows.append(
                median_round(group, lambda r: r.p99_us if r.ok and r.p99_us else float("inf"))
            )
    return rows


def _line(row: BridgeResult) -> str:
    head = f"bridge {row.broker} {row.system} {row.mode}"
    loss = f"missing {row.missing}, duplicates {row.duplicates}"
    if row.error is not None:
        return f"{head} -> failed: {row.error}"
    if row.mode == "burst":
        return f"{head} -> {row.deliveries_per_s:,.0f} deliveries/s, {loss} {row.note or ''}"
    return (
        f"{head} -> cross-hub p50 {row.p50_us} p99 {row.p99_us} µs (broker PING p50"
        f" {row.rtt_p50_us} p99 {row.rtt_p99_us} µs), {loss} {row.note or ''}"
    )
