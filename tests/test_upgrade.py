"""Master upgrade (SIGUSR2) under load: a new master on the newly deployed code takes the sockets
over; no request fails, the workers end up on the new code, socket files change hands intact."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import psutil
import trio
from conftest import APPS, open_stereo, wait_all_exited, wait_exited
from loadgen import LoadGenerator
from test_faults import current_pids, measure, started

from stereo.control.server import peer_uid

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


def kill_tree(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
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
