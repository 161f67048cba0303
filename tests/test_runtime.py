"""End to end: the real `stereo run`, real worker processes, real sockets and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import Stereo, open_stereo, wait_all_exited, wait_exited

# A started line, from the newest process of its slot or an older one still alive ("old pid P").
STARTED = r"^\[worker (\d+)(?: old pid \d+)?\] started pid=(\d+)$"


async def started_pids(stereo: Stereo, count: int, start: int = 0) -> dict[int, int]:
    matches = await stereo.wait_for(STARTED, count=count, start=start)
    return {int(m[1]): int(m[2]) for m in matches}


async def request_in_flight(
    stereo: Stereo, workers: int, text: str
) -> tuple[dict[int, int], trio.SocketStream]:
    """Once the drain app's workers started: a TCP client whose request ``text`` a worker holds
    in flight. Returns the workers' pids and the client."""
    host, port = await stereo.address()
    pids = await started_pids(stereo, workers)
    client = await trio.open_tcp_stream(host, port)
    await client.send_all(text.encode() + b"\n")
    await stereo.wait_for(rf"in flight: {text}")
    return pids, client


async def read_line(host: str, port: int) -> str:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        data = b""
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


@pytest.mark.usefixtures("relay_plane")
async def test_every_worker_sees_every_broadcast_in_one_order() -> None:
    workers, count = 3, 200
    env = {"ORDER_WORKERS": str(workers), "ORDER_COUNT": str(count)}
    with trio.fail_after(60):
        async with open_stereo("order:serve", "-w", str(workers), env=env) as stereo:
            results = await stereo.wait_for(r"^\[worker (\d+)\] RESULT (.*)$", count=workers)
            by_worker = {int(m[1]): json.loads(m[2]) for m in results}
            assert sorted(by_worker) == [1, 2, 3]
            first = by_worker[1]
            assert len(first) == workers * count
            for received in by_worker.values():
                assert received == first  # identical order, identical seqs, everywhere
            seqs = [seq for seq, _, _ in first]
            assert seqs == sorted(set(seqs))  # strictly increasing
            for sender in range(1, workers + 1):  # each sender's own messages, all, in order
                assert [n for _, s, n in first if s == sender] == list(range(count))
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_clients_are_served_by_several_workers_through_one_socket() -> None:
    with trio.fail_after(60):
        async with open_stereo(
            "pids:serve", "-w", "3", "--bind", "127.0.0.1:0", env={"PIDS_BUSY_SECONDS": "0.5"}
        ) as stereo:
            host, port = await stereo.address()
            pids = await started_pids(stereo, 3)
            served: dict[int, int] = {}
            for _ in range(20):
                line = await read_line(host, port)
                match = re.fullmatch(r"worker (\d+) pid (\d+)", line)
                assert match, line
                served[int(match[1])] = served.get(int(match[1]), 0) + 1
                assert pids[int(match[1])] == int(match[2])
                if len(served) >= 2:
                    break
            assert len(served) >= 2, served
            # The master never accepts: only worker processes hold accepted connections.
            master_conns = [c for c in _connections(stereo.pid) if c.status == "ESTABLISHED"]
            assert master_conns == []


def _connections(pid: int) -> list:  # type: ignore[type-arg]
    import psutil

    return psutil.Process(pid).net_connections(kind="tcp")


async def test_a_killed_worker_comes_back_in_its_slot() -> None:
    with trio.fail_after(60):
        async with open_stereo(
            "pids:serve", "-w", "2", "--bind", "127.0.0.1:0", env={"PIDS_BUSY_SECONDS": "0.3"}
        ) as stereo:
            host, port = await stereo.address()
            pids = await started_pids(stereo, 2)
            mark = len(stereo.lines)
            os.kill(pids[1], signal.SIGKILL)
            await stereo.wait_for(r"worker 1 \(pid \d+\) exited: killed by SIGKILL", start=mark)
            match = (await stereo.wait_for(r"^\[worker 1\] started pid=(\d+)$", start=mark))[0]
            new_pid = int(match[1])
            assert new_pid != pids[1]
            # The new process serves in slot 1 (and slot 2 was left alone).
            seen = set()
            for _ in range(20):
                seen.add(await read_line(host, port))
                if f"worker 1 pid {new_pid}" in seen:
                    break
            assert f"worker 1 pid {new_pid}" in seen
            assert f"worker 1 pid {pids[1]}" not in seen


async def test_sigterm_drains_in_flight_connection_and_exits_clean(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "drain.sock")
    with trio.fail_after(60):
        async with open_stereo("drain:serve", "-w", "2", "--bind", f"unix:{sock_path}") as stereo:
            pids = await started_pids(stereo, 2)
            client = await trio.open_unix_socket(sock_path)
            await client.send_all(b"hello\n")
            await stereo.wait_for(r"in flight: hello")
            stereo.signal(signal.SIGTERM)
            await stereo.wait_for(r"SIGTERM: stopping gracefully")
            # The listening socket is closed first: new connections are refused...
            with pytest.raises(OSError):
                await trio.open_unix_socket(sock_path)
            # ...while the request in flight still completes.
            await client.send_all(b"finish\n")
            reply = await client.receive_some(1024)
            assert reply.startswith(b"done by worker ")
            await client.aclose()
            assert await stereo.wait() == 0
            await wait_all_exited(list(pids.values()))
            assert stereo.children() == []


async def test_a_worker_stopped_while_it_boots_exits_cleanly_without_running_the_app(
    tmp_path: Path,
) -> None:
    # SIGTERM while the worker is still starting (here: importing the app, held at a gate) asks
    # it to stop, like any SIGTERM: exit 0 (stopped) before serve() runs, never killed by it.
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    env = {"GATED_FIFO": str(gate), "GATED_MARKER": str(tmp_path / "gated")}
    with trio.fail_after(60):
        async with open_stereo("gated:serve", "-w", "1", env=env) as stereo:
            pid = int((await stereo.wait_for(r"^\[worker 1\] importing pid=(\d+)$"))[0][1])
            os.kill(pid, signal.SIGTERM)
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)  # the worker holds the FIFO open
            os.write(fd, b"go")  # the import goes on, the signal already there
            os.close(fd)
            exited = await stereo.wait_for(rf"worker 1 \(pid {pid}\) exited: (.*)")
            assert exited[0][1].startswith("exit 0 (exited normally)")
            assert f"serving pid={pid}" not in stereo.worker_lines(1)
            await stereo.wait_for(r"^\[worker 1\] serving pid=")  # a new process serves
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


def test_python_m_stereo_worker_defers_stop_signals_before_importing_trio() -> None:
    # `python -m stereo.worker` imports the packages stereo and stereo.worker before its first
    # line, which defers stop signals: they must import nothing heavy, or a SIGTERM during
    # those imports would still kill a starting worker.
    code = "import sys, stereo.worker; print(sorted(set(sys.modules) & {'trio', 'cbor2'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


async def test_the_apps_imports_are_frozen_out_of_the_collector_and_unfreeze_undoes_it() -> None:
    with trio.fail_after(30):
        async with open_stereo("gcstate:serve", "-w", "1") as stereo:
            (match,) = await stereo.wait_for(
                r"^\[worker 1\] freeze_count=(\d+) imported_seen=(\w+) serve_seen=(\w+)"
                r" imported_seen_after_unfreeze=(\w+)$"
            )
    assert int(match[1]) > 1000  # trio, stereo and the app's module at least
    assert match.groups()[1:] == ("False", "True", "True")


async def test_graceful_timeout_kills_a_connection_that_never_finishes() -> None:
    with trio.fail_after(60):
        async with open_stereo(
            "drain:serve", "-w", "1", "--bind", "127.0.0.1:0", "--graceful-timeout", "1"
        ) as stereo:
            pids, client = await request_in_flight(stereo, 1, "stuck")
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
            await wait_all_exited(list(pids.values()))
            assert await client.receive_some(1024) == b""  # cut by the kill, not answered
            await client.aclose()
            assert any("still draining after 1 s" in line for line in stereo.lines)


async def test_sigkill_of_the_master_leaves_no_worker_and_frees_the_port() -> None:
    with trio.fail_after(60):
        async with open_stereo("pids:serve", "-w", "3", "--bind", "127.0.0.1:0") as stereo:
            host, port = await stereo.address()
            pids = await started_pids(stereo, 3)
            stereo.signal(signal.SIGKILL)
            with trio.fail_after(2):
                await wait_all_exited(list(pids.values()))
            probe = socket.socket()
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # nothing keeps the port
            probe.close()


def _socket_fds(pid: int) -> list[str]:
    """The socket descriptors process ``pid`` holds, as /proc/PID/fd shows them."""
    fd_dir = Path(f"/proc/{pid}/fd")
    return [
        f"{fd.name} -> {target}"
        for fd in fd_dir.iterdir()
        if (target := os.readlink(fd)).startswith("socket:")
    ]


async def test_processes_the_app_starts_hold_no_socket_once_the_master_is_killed() -> None:
    # Children that keep every inheritable descriptor (a shell, os.system, close_fds=False):
    # one started while the app is imported, one from serve(). Neither may keep the listening
    # socket (the port would stay bound, accepting into a backlog nobody serves) or the hub.
    with trio.fail_after(60):
        async with open_stereo("forker:serve", "-w", "1", "--bind", "127.0.0.1:0") as stereo:
            host, port = await stereo.address()
            match = (
                await stereo.wait_for(r"^\[worker 1\] started pid=(\d+) children=(\d+),(\d+)$")
            )[0]
            worker, children = int(match[1]), [int(match[2]), int(match[3])]
            try:
                stereo.signal(signal.SIGKILL)
                with trio.fail_after(2):
                    await wait_exited(worker)
                for child in children:
                    assert _socket_fds(child) == [], f"child {child} inherited sockets"
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((host, port), timeout=5).close()
            finally:
                for child in children:
                    os.kill(child, signal.SIGKILL)


@pytest.mark.usefixtures("relay_plane")
async def test_a_worker_writing_garbage_is_cut_off_and_others_keep_receiving(
    tmp_path: Path,
) -> None:
    env = {"GARBAGE_MARKER": str(tmp_path / "done")}
    with trio.fail_after(60):
        async with open_stereo("garbage:serve", "-w", "2", env=env) as stereo:
            first = await started_pids(stereo, 2)
            await stereo.wait_for(r"worker 1 \(pid \d+\) exited: cut off: protocol error")
            await wait_exited(first[1])
            # Slot 1 comes back with a new process, and worker 2 (never restarted) receives its
            # hello: the relay and the other worker carried on.
            match = (await stereo.wait_for(r"^\[worker 1\] started pid=(\d+)$", count=2))[1]
            new_pid = int(match[1])
            assert new_pid != first[1]
            await stereo.wait_for(rf"^\[worker 2\] saw hello from 1 pid={new_pid}$")
            assert stereo.process.returncode is None
            assert len(re.findall(r"\[worker 2\] started", "\n".join(stereo.lines))) == 1


@pytest.mark.usefixtures("relay_plane")
async def test_an_oversize_length_prefix_is_cut_off_before_the_body(tmp_path: Path) -> None:
    # 0x7fffffff bytes announced: refused from the prefix alone, nothing allocated.
    env = {
        "GARBAGE_MARKER": str(tmp_path / "done"),
        "GARBAGE_BYTES": "\x7f\xff\xff\xff\x05",
    }
    with trio.fail_after(60):
        async with open_stereo("garbage:serve", "-w", "2", env=env) as stereo:
            await stereo.wait_for(r"worker 1 \(pid \d+\) exited: cut off: protocol error: frame of")
            await stereo.wait_for(r"^\[worker 2\] saw hello from 1 pid=\d+$", count=1)


async def test_an_app_that_cannot_import_leaves_its_slot_failed_and_the_master_up(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "broken"
    env = {"BREAK_MARKER": str(marker)}
    with trio.fail_after(60):
        async with open_stereo(
            "breakable:serve", "-w", "2", "--bind", "127.0.0.1:0", env=env
        ) as stereo:
            host, port = await stereo.address()
            pids = await started_pids(stereo, 2)
            marker.touch()  # the next import of the app fails, as after a bad deploy
            os.kill(pids[1], signal.SIGKILL)
            await stereo.wait_for(
                r"worker 1 failed: exit 4 \(app load error\): cannot import 'breakable':"
                r" ImportError: simulated bad deploy"
            )
            # The master is up and slot 2 still serves through the shared socket.
            assert stereo.process.returncode is None
            for _ in range(5):
                assert await read_line(host, port) == "worker 2"
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


@pytest.mark.usefixtures("relay_plane")
async def test_broadcasts_queued_just_before_serve_returns_are_delivered(tmp_path: Path) -> None:
    env = {"LASTWORD_MARKER": str(tmp_path / "spoken")}
    with trio.fail_after(60):
        async with open_stereo("lastword:serve", "-w", "2", env=env) as stereo:
            # Worker 2 may start after worker 1: it re-announces until worker 1 answers.
            await stereo.wait_for(r"^\[worker 2\] got last word$")


async def test_ctrl_c_drains_and_a_second_ctrl_c_stops_at_once() -> None:
    # A drain that would outlast the test: only the second Ctrl-C can end it in time.
    args = ("drain:serve", "-w", "2", "--bind", "127.0.0.1:0", "--graceful-timeout", "600")
    with trio.fail_after(60):
        async with open_stereo(*args) as stereo:
            pids, client = await request_in_flight(stereo, 2, "slow")
            stereo.signal(signal.SIGINT)
            await stereo.wait_for(r"interrupted: stopping gracefully")
            assert stereo.process.returncode is None  # still draining the request in flight
            stereo.signal(signal.SIGINT)
            await stereo.wait_for(r"interrupted again: stopping now")
            assert await stereo.wait() == 0
            assert not any("still draining" in line for line in stereo.lines)
            await wait_all_exited(list(pids.values()))
            assert await client.receive_some(1024) == b""  # cut, not answered: no drain
            await client.aclose()


async def test_a_crash_during_a_rolling_restart_leaves_one_process_in_the_slot(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "slow"
    with trio.fail_after(60):
        async with open_stereo(
            "slowboot:serve", "-w", "1", env={"SLOWBOOT_MARKER": str(marker)}
        ) as stereo:
            old = (await started_pids(stereo, 1))[1]
            marker.touch()
            mark = len(stereo.lines)
            stereo.signal(signal.SIGHUP)  # the replacement boots slowly...
            await stereo.wait_for(r"SIGHUP: rolling restart", start=mark)
            os.kill(old, signal.SIGKILL)  # ...and the old process dies meanwhile
            await stereo.wait_for(r"worker 1 \(pid \d+\) exited: killed by SIGKILL", start=mark)
            # Two new processes boot now: the restart's replacement and the respawn loop's one.
            await stereo.wait_for(STARTED, start=mark)
            booted = stereo.live_children()
            # One of them must be stopped (it may be gone already), whichever became ready
            # first, and the slot is left with exactly one process.
            assert 1 <= len(booted) <= 2
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:

                    async def first_exit(pid: int) -> None:
                        await wait_exited(pid)
                        nursery.cancel_scope.cancel()

                    for pid in booted if len(booted) == 2 else []:
                        nursery.start_soon(first_exit, pid)
            survivors = stereo.live_children()
            assert len(survivors) == 1 and survivors[0] in booted
