"""The machine's floor for one hop: how long a message takes to wake another process and come back.

A stereo broadcast crosses two hops (sender -> master -> receiver), each a process that was idle
waking up to read it. This measures one hop on its own, outside stereo: a parent sends 64 bytes
over a socketpair to an echoing child every millisecond and times the round trip; a hop is half
of it. The child echoes either with blocking calls (the least Python can do) or from a trio loop
(what stereo's master and workers pay), so the latency table can say how much of stereo's figure
is the machine and the event loop rather than stereo.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from .procs import suite_env
from .results import HopFloor, percentile

PINGS = 2000
WARMUP = 100
GAP_S = 0.001
PAYLOAD = b"x" * 64


def measure(echo: str, pings: int = PINGS) -> HopFloor:
    parent, child = socket.socketpair()
    with parent, child:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", echo, str(child.fileno())],
            pass_fds=[child.fileno()],
            env=suite_env(),
        )
        child.close()
        try:
            hops: list[int] = []
            for i in range(WARMUP + pings):
                start = time.perf_counter_ns()
                parent.sendall(PAYLOAD)
                got = 0
                while got < len(PAYLOAD):
                    chunk = parent.recv(4096)
                    if not chunk:
                        raise RuntimeError(f"the {echo} echo process ended early")
                    got += len(chunk)
                if i >= WARMUP:
                    hops.append((time.perf_counter_ns() - start) // 2)
                time.sleep(GAP_S)
        finally:
            parent.shutdown(socket.SHUT_WR)
            proc.wait(timeout=30)
    hops.sort()
    return HopFloor(echo, percentile(hops, 50) / 1e3, percentile(hops, 99) / 1e3)


def _echo_blocking(sock: socket.socket) -> None:
    while data := sock.recv(4096):
        sock.sendall(data)


def _echo_trio(sock: socket.socket) -> None:
    import trio

    async def echo() -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        while data := await stream.receive_some(4096):
            await stream.send_all(data)

    trio.run(echo)


if __name__ == "__main__":
    _sock = socket.socket(fileno=int(sys.argv[2]))
    _echo_trio(_sock) if sys.argv[1] == "trio" else _echo_blocking(_sock)
