"""Master upgrade (SIGUSR2) under load: a new master on the newly deployed code takes the sockets
over; no request fails, the workers end up on the new code, socket files change hands intact.
Then what happens when a stop, a kill or another SIGUSR2 lands while an upgrade is under way."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from conftest import APPS, Stereo, open_stereo, stereo_command, wait_all_exited, wait_exited
from loadgen import LoadGenerator
from test_faults import current_pids, measure, started

from stereo.control.server import peer_uid
from stereo.master.upgrade import Upgrader

TEMPLATE = (APPS / "httpd.py").read_text()
VERSION_LINE = 'VERSION = os.environ.get("HTTPD_VERSION", "1")'


def deploy(app_dir: Path, version: str) -> None:
    """Write the app as a deploy would: the next import (a new worker) gets this version."""
    assert VERSION_LINE in TEMPLATE
    (app_dir / "vapp.py").write_text(TEMPLATE.replace(VERSION_LINE, f"VERSION = {version!r}"))


def control_socket_owner(path: Path) -> int:
    """The pid of the process listening on a unix socket (SO_PEERCRED of a connection to it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        return peer_uid(sock)[0]


def kill_tree(process: int | psutil.Process | None) -> None:
    """Kill a process and its descendants (a psutil.Process is never confused with a later process
    that reuses its pid)."""
    if process is None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        if isinstance(process, int):
            process = psutil.Process(process)
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        process.kill()


def layout(tmp_path: Path) -> tuple[Path, Path, Path, tuple[str, ...]]:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    deploy(app_dir, "one")
    unix = tmp_path / "http.sock"
    control = tmp_path / "control" / "stereo.sock"
    args = (
        "vapp:serve",
        "-w",
        "3",
        "--app-dir",
        str(app_dir),
        "--bind",
        "127.0.0.1:0",
        "--bind",
        f"unix:{unix}",
        "--control",
        str(control),
        "--graceful-timeout",
        "10",
    )
    return app_dir, unix, control, args


ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # a rewritten app file must never meet a stale .pyc


async def test_sigusr2_hands_over_to_a_new_master_on_new_code_without_a_failed_request(
    tmp_path: Path,
) -> None:
    app_dir, unix, control, args = layout(tmp_path)
    new_master: int | None = None
    try:
        with trio.fail_after(120):
            async with open_stereo(*args, env=ENV) as stereo:
                host, port = await stereo.address()
                old_workers = await started(stereo, 3)
                assert control_socket_owner(control) == stereo.pid
                load = LoadGenerator(host, port, clients=8)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(load.run)
                    await load.wait_ok(200)
                    deploy(app_dir, "two")
                    load.phase = "upgrade"
                    mark = len(stereo.lines)
                    began = trio.current_time()
                    stereo.signal(signal.SIGUSR2)
                    match = await stereo.wait_for(r"SIGUSR2: started new master pid (\d+)")
                    new_master = int(match[0][1])
                    await stereo.wait_for(
                        rf"took over from master pid {stereo.pid}: 3 workers ready", start=mark
                    )
                    assert await stereo.process.wait() == 0  # the old master drained and left
                    await wait_all_exited(list(old_workers.values()))
                    measure(
                        "upgrade: SIGUSR2 -> old master gone (s)",
                        round(trio.current_time() - began, 2),
                    )
                    load.phase = "after"
                    await load.wait_ok(300)
                    load.stop()
                measure("upgrade: requests per phase (ok, failed)", load.summary())
                assert load.failures == []
                # Every worker now runs the new code, and only new workers answer.
                new_workers = current_pids(stereo)
                assert set(new_workers.values()).isdisjoint(old_workers.values())
                versions = [line for line in stereo.lines[mark:] if "] started pid=" in line]
                assert len(versions) == 3 and all(v.endswith("version=two") for v in versions)
                assert all(body.endswith("version two") for body in load.last_bodies)
                # The sockets changed hands intact: the unix socket file is still there and
                # serves, and the control socket is the new master's.
                assert unix.exists()
                stream = await trio.open_unix_socket(str(unix))
                async with stream:
                    await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
                    reply = b""
                    while chunk := await stream.receive_some(4096):
                        reply += chunk
                assert reply.endswith(b"version two\n")
                assert control_socket_owner(control) == new_master
                # The new master is a master like any other: it stops on SIGTERM and cleans up.
                os.kill(new_master, signal.SIGTERM)
                await wait_exited(new_master)
                await wait_all_exited(list(new_workers.values()))
                assert not unix.exists()
                assert not control.exists()
                new_master = None
    finally:
        kill_tree(new_master)


async def test_an_upgrade_to_code_that_cannot_load_is_abandoned_and_the_old_master_serves_on(
    tmp_path: Path,
) -> None:
    app_dir, unix, control, args = layout(tmp_path)
    new_master: int | None = None
    try:
        with trio.fail_after(120):
            async with open_stereo(*args, env=ENV) as stereo:
                host, port = await stereo.address()
                old_workers = await started(stereo, 3)
                load = LoadGenerator(host, port, clients=8)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(load.run)
                    await load.wait_ok(200)
                    (app_dir / "vapp.py").write_text("raise ImportError('bad deploy')\n")
                    load.phase = "failed upgrade"
                    stereo.signal(signal.SIGUSR2)
                    match = await stereo.wait_for(r"SIGUSR2: started new master pid (\d+)")
                    new_master = int(match[0][1])
                    await stereo.wait_for(
                        r"upgrade abandoned: a new worker exited before every worker was ready;"
                        rf" master pid {stereo.pid} serves on"
                    )
                    await stereo.wait_for(
                        rf"upgrade failed: new master pid {new_master} ended \(exit 0\) before"
                        r" taking over; this master serves on"
                    )
                    await wait_exited(new_master)
                    new_master = None
                    await load.wait_ok(200)
                    load.stop()
                assert load.failures == []
                # Nothing changed hands: same workers, same socket files, same control socket.
                assert current_pids(stereo) == old_workers
                assert unix.exists()
                assert control_socket_owner(control) == stereo.pid
                stereo.signal(signal.SIGTERM)
                assert await stereo.wait() == 0
                assert not unix.exists()
    finally:
        kill_tree(new_master)


# -- a stop, a kill or a second SIGUSR2 while an upgrade is under way -----------------------------
#
# The workers run tests/apps/hangboot.py: while the marker file exists a new worker hangs at
# import, so an upgrade started then stays under way (the new master waits for its workers) for as
# long as a test needs, and removing the marker lets it complete. Nothing depends on timing.

BOOTING = r"^\[worker \d+\] booting pid=(\d+)$"
ALREADY = r"^\[stereo\] SIGUSR2 ignored: an upgrade is already under way$"


@dataclass
class HangingUpgrade:
    stereo: Stereo  # the old master
    host: str
    port: int
    control: Path
    marker: Path  # remove it and the new workers get ready
    old_workers: list[int]
    new_master: int
    new_workers: list[int]


@asynccontextmanager
async def open_hanging_upgrade(tmp_path: Path) -> AsyncIterator[HangingUpgrade]:
    """A master with 2 workers, sent SIGUSR2 while new workers cannot boot; entered once the new
    master's workers hang at import. Whatever is left of the new master is killed at the end."""
    marker = tmp_path / "hang"
    control = tmp_path / "control" / "stereo.sock"
    args = ("hangboot:serve", "-w", "2", "--bind", "127.0.0.1:0", "--control", str(control))
    env = {"HANGBOOT_MARKER": str(marker)}
    with trio.fail_after(60):
        async with open_stereo(*args, "--graceful-timeout", "5", env=env) as stereo:
            host, port = await stereo.address()
            old_workers = list((await started(stereo, 2)).values())
            await trio.Path(marker).touch()
            mark = len(stereo.lines)
            stereo.signal(signal.SIGUSR2)
            match = await stereo.wait_for(r"SIGUSR2: started new master pid (\d+)", start=mark)
            booting = await stereo.wait_for(BOOTING, count=2, start=mark)
            new_master = psutil.Process(int(match[0][1]))  # alive: its workers are booting
            try:
                yield HangingUpgrade(
                    stereo,
                    host,
                    port,
                    control,
                    marker,
                    old_workers,
                    new_master.pid,
                    [int(m[1]) for m in booting],
                )
            finally:
                kill_tree(new_master)


async def assert_refused(host: str, port: int) -> None:
    with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        await sock.connect((host, port))


async def assert_accepted(host: str, port: int) -> None:
    client = await trio.open_tcp_stream(host, port)
    await client.aclose()


# The line the old master logs when it takes each stop.
STOPS = {
    "SIGTERM": r"SIGTERM: stopping gracefully",
    "SIGINT": r"interrupted: stopping gracefully",
    "SIGQUIT": r"SIGQUIT: stopping now",
    "ctl shutdown": r"control: graceful shutdown requested",
    "ctl shutdown quick": r"control: quick shutdown requested",
}


@pytest.mark.parametrize(
    ("stop", "passed_on"),
    [
        ("SIGTERM", "SIGTERM"),
        ("SIGINT", "SIGTERM"),
        ("SIGQUIT", "SIGQUIT"),
        ("ctl shutdown", "SIGTERM"),
        ("ctl shutdown quick", "SIGQUIT"),
    ],
)
async def test_a_stop_during_an_upgrade_stops_both_masters_and_frees_the_port(
    tmp_path: Path, stop: str, passed_on: str
) -> None:
    async with open_hanging_upgrade(tmp_path) as up:
        stereo = up.stereo
        # One upgrade at a time: a second SIGUSR2 meanwhile is ignored.
        mark = len(stereo.lines)
        stereo.signal(signal.SIGUSR2)
        await stereo.wait_for(ALREADY, start=mark)
        began = trio.current_time()
        if stop.startswith("ctl "):
            words = stop.split()[1:]
            command = stereo_command("ctl", "--control", str(up.control), *words)
            await trio.run_process(command, capture_stdout=True)
        else:
            stereo.signal(getattr(signal, stop))
        await stereo.wait_for(STOPS[stop], start=mark)
        # Were the stop lost, the new workers would be ready now, and the new master would take
        # over and serve on.
        up.marker.unlink()
        assert await stereo.process.wait() == 0
        measure(
            f"upgrade: {stop} mid-upgrade -> old master gone, last (s)",
            round(trio.current_time() - began, 2),
        )
        # The old master exits last: once it has, nothing holds the port.
        await assert_refused(up.host, up.port)
        with trio.fail_after(5):
            await wait_all_exited([up.new_master, *up.old_workers, *up.new_workers])
        await stereo.wait_for(
            rf"upgrade cancelled: stopping new master pid {up.new_master} too \({passed_on}\)"
        )
        assert not up.control.exists()


async def test_a_stop_sent_to_the_new_master_before_it_took_over_cancels_only_the_upgrade(
    tmp_path: Path,
) -> None:
    async with open_hanging_upgrade(tmp_path) as up:
        stereo = up.stereo
        # The new master does not start an upgrade of its own before it took over.
        mark = len(stereo.lines)
        os.kill(up.new_master, signal.SIGUSR2)
        await stereo.wait_for(ALREADY, start=mark)
        os.kill(up.new_master, signal.SIGTERM)
        with trio.fail_after(20):  # far below the 60 s a new master waits for its workers
            await stereo.wait_for(
                rf"upgrade failed: new master pid {up.new_master} ended \(exit 0\) before"
                r" taking over; this master serves on",
                start=mark,
            )
            await wait_all_exited([up.new_master, *up.new_workers])
        up.marker.unlink()
        # The old master serves on as before: same workers, same sockets.
        assert sorted(stereo.live_children()) == sorted(up.old_workers)
        assert control_socket_owner(up.control) == stereo.pid
        await assert_accepted(up.host, up.port)
        stereo.signal(signal.SIGTERM)
        assert await stereo.wait() == 0
        await assert_refused(up.host, up.port)


async def test_when_the_old_master_dies_mid_upgrade_the_new_one_takes_over_and_says_so(
    tmp_path: Path,
) -> None:
    async with open_hanging_upgrade(tmp_path) as up:
        stereo = up.stereo
        stereo.signal(signal.SIGKILL)
        assert await stereo.process.wait() == -signal.SIGKILL
        await wait_all_exited(up.old_workers)  # they see their hub connection end
        up.marker.unlink()
        match = await stereo.wait_for(rf"took over from master pid {stereo.pid}\b.*")
        assert match[0][0] == (
            f"took over from master pid {stereo.pid}, which had already exited:"
            " 2 workers ready; this master serves alone"
        )
        await assert_accepted(up.host, up.port)
        assert control_socket_owner(up.control) == up.new_master
        os.kill(up.new_master, signal.SIGTERM)
        await wait_exited(up.new_master)
        await wait_all_exited(up.new_workers)
        await assert_refused(up.host, up.port)
        assert not up.control.exists()


async def test_a_stop_after_the_handover_only_hurries_the_old_master(tmp_path: Path) -> None:
    control = tmp_path / "control" / "stereo.sock"
    new_master: psutil.Process | None = None
    try:
        with trio.fail_after(60):
            async with open_stereo(
                "drain:serve", "-w", "2", "--bind", "127.0.0.1:0", "--control", str(control)
            ) as stereo:
                host, port = await stereo.address()
                old_workers = list((await started(stereo, 2)).values())
                # A request in flight on an old worker keeps the old master draining.
                client = await trio.open_tcp_stream(host, port)
                await client.send_all(b"hello\n")
                await stereo.wait_for(r"in flight: hello")
                stereo.signal(signal.SIGUSR2)
                match = await stereo.wait_for(
                    r"upgrade: new master pid (\d+) is serving; stopping gracefully"
                )
                new_master = psutil.Process(int(match[0][1]))
                mark = len(stereo.lines)
                stereo.signal(signal.SIGTERM)
                await stereo.wait_for(
                    rf"master pid {new_master.pid} took over and serves on; only this master"
                    " stops",
                    start=mark,
                )
                await client.send_all(b"finish\n")  # the old master still drains as before
                assert (await client.receive_some(1024)).startswith(b"done by worker ")
                await client.aclose()
                assert await stereo.process.wait() == 0
                await wait_all_exited(old_workers)
                # The new master, which had taken over, serves on.
                await assert_accepted(host, port)
                assert control_socket_owner(control) == new_master.pid
                new_master.terminate()
                await wait_exited(new_master.pid)
                await assert_refused(host, port)
    finally:
        kill_tree(new_master)


class _Supervisor:
    stopping = False

    def active_count(self) -> int:
        return 1


class _Host:
    """Just what an Upgrader reads of its master; no sockets to hand over."""

    def __init__(self) -> None:
        self.sockets: list[object] = []
        self.supervisor = _Supervisor()
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def shutdown(self, graceful: bool = True) -> None:
        raise AssertionError("the old master steps aside only after the new one's 'ready'")


async def test_a_stop_while_the_new_master_is_spawned_is_passed_on_and_the_wait_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stop lands while the new master's fork/exec is under way (held open here); the stand-in
    # new master ignores SIGTERM, so only the bound can end the old master's wait for it.
    spawning, go = trio.Event(), trio.Event()
    real_open_process = trio.lowlevel.open_process

    async def held_open_process(command: list[str], **options: Any) -> trio.Process:
        spawning.set()
        await go.wait()
        ignore_term = partial(signal.signal, signal.SIGTERM, signal.SIG_IGN)  # from its start
        return await real_open_process(["sleep", "60"], preexec_fn=ignore_term, **options)

    monkeypatch.setattr(trio.lowlevel, "open_process", held_open_process)
    host = _Host()
    upgrader = Upgrader(host, ["run", "app:serve"], stop_timeout=0.5)  # type: ignore[arg-type]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upgrader.run)
            await spawning.wait()
            host.supervisor.stopping = True
            upgrader.stop(graceful=True)  # no process yet: passed on once there is one
            go.set()
            began = trio.current_time()
            await upgrader.wait()
            assert trio.current_time() - began >= 0.5
    pid = int(re.search(r"new master pid (\d+)", host.lines[0])[1])  # type: ignore[index]
    assert host.lines[1:] == [
        f"upgrade cancelled: stopping new master pid {pid} too (SIGTERM)",
        f"upgrade: new master pid {pid} still running 0.5 s after it was told to stop; killing it",
        f"upgrade cancelled: new master pid {pid} ended (killed by SIGKILL)",
    ]
