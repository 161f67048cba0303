"""``stereo run --reuse-port``: one SO_REUSEPORT listening socket per worker slot.

The master binds a non-listening anchor that holds the address; each slot listens on a socket of
its own, which outlives the slot's worker processes. What could go wrong, and is checked here: a
listening socket nobody accepts from (connections would hang), and a slot socket that is not
handed to the slot's next worker or not closed when the slot goes.
"""

from __future__ import annotations

import re
import signal

import psutil
import trio
from conftest import Stereo, open_stereo, wait_exited
from test_examples import EXAMPLES, http_get

CONNECTIONS = 40  # all on one of 2 sockets by chance: 2 ** -39


async def whoami(address: tuple[str, int]) -> tuple[int, int]:
    """(worker id, pid) of the worker that answered one request."""
    with trio.fail_after(5):  # a connection stuck in a backlog nobody accepts from fails here
        response = await http_get(address)
    match = re.search(r"worker (\d+) \(pid (\d+)\)\n$", response)
    assert match, response
    return int(match[1]), int(match[2])


async def answers(address: tuple[str, int]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for _ in range(CONNECTIONS):
        worker_id, pid = await whoami(address)
        found.setdefault(worker_id, set()).add(pid)
    return found


async def answers_from(address: tuple[str, int], worker_id: int) -> set[int]:
    """The pids that answered for ``worker_id`` among CONNECTIONS requests."""
    found = await answers(address)
    assert worker_id in found, found
    return found[worker_id]


def listening_sockets(port: int, pids: list[int]) -> int:
    """Distinct listening sockets on ``port`` held by these processes."""
    inodes = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                inodes.add((conn.fd, pid))
    return len(inodes)


async def start(stereo: Stereo) -> tuple[str, int]:
    address = await stereo.address()
    await stereo.wait_for(r"^\[worker \d+\] whoami: worker \d+ ready$", count=2)
    return address


async def test_each_slot_listens_on_its_own_socket_and_keeps_it_across_restarts() -> None:
    args = ["whoami:serve", "-w", "2", "--app-dir", str(EXAMPLES), "--reuse-port"]
    with trio.fail_after(40):
        async with open_stereo(*args, "--bind", "127.0.0.1:0", cwd=EXAMPLES) as stereo:
            address = await start(stereo)
            first = await answers(address)
            assert set(first) == {1, 2}, first  # the kernel spread them over both sockets
            # Two listening sockets (each held by the master and its slot's worker); the
            # master's anchor holds the port without listening.
            assert listening_sockets(address[1], [stereo.pid]) == 2

            (old_pid,) = first[1]
            psutil.Process(old_pid).kill()
            await stereo.wait_for(r"^\[worker 1\] whoami: worker 1 ready$", count=2)
            again = await answers(address)
            assert set(again) == {1, 2}, again  # slot 1's socket went to its new worker
            assert again[1] != {old_pid} and again[2] == first[2]


async def test_a_removed_slot_stops_taking_connections() -> None:
    args = ["whoami:serve", "-w", "2", "--app-dir", str(EXAMPLES), "--reuse-port"]
    with trio.fail_after(40):
        async with open_stereo(*args, "--bind", "127.0.0.1:0", cwd=EXAMPLES) as stereo:
            address = await start(stereo)
            (slot2_pid,) = await answers_from(address, 2)
            stereo.signal(signal.SIGTTOU)  # one worker fewer: slot 2 goes
            await stereo.wait_for(r"SIGTTOU: removing worker \[2\]")
            await wait_exited(slot2_pid)
            # Had the master kept slot 2's socket open, about half of these would wait in its
            # backlog for an accept that never comes, and time out.
            assert set(await answers(address)) == {1}
            assert listening_sockets(address[1], [stereo.pid]) == 1
