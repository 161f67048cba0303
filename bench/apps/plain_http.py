"""The baseline leg of the serving workload: the same handler in one plain trio process.

Usage: ``python -m bench.apps.plain_http FD`` with a listening TCP socket inherited as FD,
the way stereo's workers inherit theirs. SIGTERM stops it cleanly so the final count is written.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from functools import partial

import trio

from ._spec import emit
from .http_handler import Counter, handle


async def main(fd: int) -> None:
    sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
    listener = trio.SocketListener(sock)
    counter = Counter(0)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.write_periodically)
            await nursery.start(
                partial(trio.serve_listeners, partial(handle, counter=counter), [listener])
            )
            emit("ready", id=0, pid=os.getpid())
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
