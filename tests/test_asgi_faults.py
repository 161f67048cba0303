"""An ASGI app (FastAPI) under load through everything that replaces or removes workers: rolling
restart, scale up and down, a master upgrade and a graceful stop. Requests in flight finish and
no request fails, for clients that open a connection per request and for keep-alive clients
(which resend only a request the server closed an idle connection under, as RFC 9112 allows)."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from conftest import APPS, open_stereo, wait_all_exited
from loadgen import KeepAliveLoad, LoadGenerator
from test_faults import current_pids, measure, started
from test_upgrade import kill_tree

VERSION_LINE = 'VERSION = os.environ.get("HTTPD_VERSION", "1")'
CLOSE_SLOW = b"GET /slow HTTP/1.1\r\nHost: stereo-test\r\nConnection: close\r\n\r\n"


def loads(host: str, port: int) -> tuple[LoadGenerator, KeepAliveLoad]:
    return (
        LoadGenerator(host, port, clients=4, request=CLOSE_SLOW),
        KeepAliveLoad(host, port, clients=4),
    )


def set_phase(phase: str, *generators: LoadGenerator) -> None:
    for generator in generators:
        generator.phase = phase


async def wait_ok(count: int, *generators: LoadGenerator) -> None:
    for generator in generators:
        await generator.wait_ok(count)


def check_no_failures(*generators: LoadGenerator) -> None:
    for generator in generators:
        measure(f"{type(generator).__name__}: requests per phase (ok, failed)", generator.summary())
        assert generator.failures == [], generator.failures[:5]


async def test_rolling_restart_and_scaling_under_load_fail_no_request() -> None:
    with trio.fail_after(150):
        args = ("asgi_httpd:app", "-w", "2", "--bind", "127.0.0.1:0", "--no-access-log")
        async with open_stereo(*args) as stereo:
            host, port = await stereo.address()
            await started(stereo, 2)
            close_load, keep_alive = loads(host, port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_load.run)
                nursery.start_soon(keep_alive.run)
                await wait_ok(50, close_load, keep_alive)

                set_phase("SIGHUP", close_load, keep_alive)
                old = current_pids(stereo)
                mark = len(stereo.lines)
                stereo.signal(signal.SIGHUP)
                await started(stereo, 2, start=mark)
                await wait_all_exited(list(old.values()))
                await wait_ok(50, close_load, keep_alive)

                set_phase("scale 2->4->1", close_load, keep_alive)
                for n in (3, 4):
                    mark = len(stereo.lines)
                    stereo.signal(signal.SIGTTIN)
                    await stereo.wait_for(rf"^\[worker {n}\] started", start=mark)
                await wait_ok(50, close_load, keep_alive)
                before = current_pids(stereo)
                for n in (4, 3, 2):
                    mark = len(stereo.lines)
                    stereo.signal(signal.SIGTTOU)
                    await stereo.wait_for(rf"SIGTTOU: removing worker \[{n}\]", start=mark)
                await wait_all_exited([before[n] for n in (2, 3, 4)])
                set_phase("after", close_load, keep_alive)
                await wait_ok(50, close_load, keep_alive)
                close_load.stop()
                keep_alive.stop()
            check_no_failures(close_load, keep_alive)
            measure(
                "keep-alive: requests on a reused connection, resent",
                (keep_alive.reused, keep_alive.retried),
            )
            assert keep_alive.reused > 0  # the keep-alive clients did keep their connections
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_a_graceful_stop_finishes_the_requests_in_flight() -> None:
    env = {"SLOW": "1.0", "SLOW_SAYS": "1"}
    args = ("asgi_httpd:app", "-w", "2", "--bind", "127.0.0.1:0", "--access-log")
    answers: list[bytes] = []
    async with open_stereo(*args, env=env) as stereo:
        with trio.fail_after(60):
            host, port = await stereo.address()
            await started(stereo, 2)

            async def slow_request() -> None:
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    await stream.send_all(b"GET /slow HTTP/1.1\r\nHost: stereo-test\r\n\r\n")
                    data = b""
                    while chunk := await stream.receive_some():
                        data += chunk  # to EOF: the drain must close this keep-alive connection
                answers.append(data)

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(slow_request)
                # In the app, not in the listening socket's queue, when SIGTERM lands.
                await stereo.wait_for(r"^\[worker \d\] slow request begins$", count=4)
                stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
            # The access log shows every one of them answered before the worker left.
            assert len([line for line in stereo.lines if '"GET /slow HTTP/1.1" 200' in line]) == 4
    assert len(answers) == 4
    for data in answers:
        head = data.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 200 ok"), data[:100]
        assert b"connection: close" in head  # told, since the worker was draining


async def test_a_master_upgrade_under_load_fails_no_request(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    source = (APPS / "asgi_httpd.py").read_text()
    (app_dir / "vapp.py").write_text(source)
    control = tmp_path / "control" / "stereo.sock"
    args = ("vapp:app", "-w", "2", "--app-dir", str(app_dir), "--bind", "127.0.0.1:0")
    args += ("--control", str(control), "--no-access-log", "--graceful-timeout", "10")
    new_master = None
    try:
        with trio.fail_after(120):
            async with open_stereo(*args, env={"PYTHONDONTWRITEBYTECODE": "1"}) as stereo:
                host, port = await stereo.address()
                old_workers = await started(stereo, 2)
                close_load, keep_alive = loads(host, port)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(close_load.run)
                    nursery.start_soon(keep_alive.run)
                    await wait_ok(50, close_load, keep_alive)
                    (app_dir / "vapp.py").write_text(source.replace(VERSION_LINE, "VERSION = '2'"))
                    set_phase("upgrade", close_load, keep_alive)
                    mark = len(stereo.lines)
                    stereo.signal(signal.SIGUSR2)
                    match = await stereo.wait_for(r"SIGUSR2: started new master pid (\d+)")
                    new_master = int(match[0][1])
                    await stereo.wait_for(rf"took over from master pid {stereo.pid}", start=mark)
                    assert await stereo.process.wait() == 0
                    await wait_all_exited(list(old_workers.values()))
                    set_phase("after", close_load, keep_alive)
                    await wait_ok(100, close_load, keep_alive)
                    close_load.stop()
                    keep_alive.stop()
                check_no_failures(close_load, keep_alive)
                # Only the new code answers now.
                assert all("version 2" in body for body in keep_alive.last_bodies)
    finally:
        kill_tree(new_master)
