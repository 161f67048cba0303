"""The WebSocket fan-out load generator: one sender and R receivers in one trio process.

``python -m bench.wsload PORT MODE COUNT OUT.json [--rate N] [--receivers R] [--workers W]
[--timeout S]`` connects R receivers to ``/sub``, reconnecting until they are spread evenly over
the W worker processes (each connection's first message names its process), then a sender to
``/pub``. The sender then repeats a probe until every receiver has seen one, which proves every
subscription live end to end (however the server subscribes, and however late), prints
``@bench go``, and sends COUNT messages: as fast as the connection takes them (``burst``) or
at ``--rate`` a second (``paced``). Each message is 64 bytes of text,
``d <seq> <CLOCK_MONOTONIC ns at send> xxx...``; receivers count every sequence number (so loss and
duplicates are exact) and, paced, the delay. ``@bench done`` follows the last receipt, or the
timeout; the figures, this process's own CPU time among them, go to OUT.json.

wsproto does the handshakes and frames what the sender sends. Receivers split the server's frames
themselves (:func:`parse_frames`): a Python event per frame from wsproto costs several times more,
and on a shared 2-core machine this process's CPU is taken from the server under test.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from .apps._spec import emit
from .results import percentile

PAYLOAD = 64
PROBE_EVERY = 0.01
BATCH = 64  # burst: frames per send_all
MAX_PLACEMENTS = 50  # connection attempts per receiver before giving up on an even spread

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class FrameError(ValueError):
    """A frame this generator does not expect from a server (masked or fragmented)."""


def parse_frames(buf: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The complete frames at the start of ``buf`` as (opcode, payload), and the bytes they take.

    Server frames are unmasked (RFC 6455 5.1); the fan-out's messages are small, so a server
    has no reason to fragment them: either is a FrameError rather than a silent miscount.
    """
    frames = []
    pos = 0
    end = len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        if b1 & 0x80:
            raise FrameError("masked frame from the server")
        if not b0 & 0x80 or b0 & 0x0F == OP_CONT:
            raise FrameError("fragmented message from the server")
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if end - pos < 4:
                break
            (length,) = struct.unpack_from("!H", buf, pos + 2)
            head = 4
        elif length == 127:
            if end - pos < 10:
                break
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            head = 10
        if end - pos < head + length:
            break
        frames.append((b0 & 0x0F, bytes(buf[pos + head : pos + head + length])))
        pos += head + length
    return frames, pos


def data_message(seq: int, sent_ns: int) -> str:
    text = f"d {seq} {sent_ns} "
    return text + "x" * (PAYLOAD - len(text))


@dataclass
class Tally:
    """What one receiver got: every sequence number counted, and the delays when paced."""

    count: int
    seen: bytearray = field(init=False)
    received: int = 0
    duplicates: int = 0
    last_ns: int = 0
    delays_ns: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.count)

    def add(self, payload: bytes, now_ns: int, keep_delay: bool) -> None:
        _, seq_text, sent_text, _ = payload.split(b" ", 3)
        seq = int(seq_text)
        if self.seen[seq]:
            self.duplicates += 1
            return
        self.seen[seq] = 1
        self.received += 1
        self.last_ns = now_ns
        if keep_delay:
            self.delays_ns.append(now_ns - int(sent_text))

    @property
    def lost(self) -> int:
        return self.count - self.received


class Connection:
    def __init__(self, stream: trio.SocketStream, ws: WSConnection, pid: int) -> None:
        self.stream = stream
        self.ws = ws
        self.pid = pid  # the server process that accepted it

    async def aclose(self) -> None:
        try:
            await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        await self.stream.aclose()


async def connect(port: int, path: str) -> Connection:
    """Open a WebSocket and read the server's ``hello <pid>``."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=path)))
        text = ""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError(f"{path}: the server closed before its hello")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, RejectConnection | CloseConnection):
                    raise ConnectionError(f"{path}: the server refused the WebSocket: {event}")
                if isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        # Nothing follows the hello until the probes, so wsproto holds no more
                        # of the stream: the receivers parse what comes next themselves.
                        return Connection(stream, ws, int(text.split()[1]))
    except BaseException:
        await stream.aclose()
        raise


async def place_receivers(port: int, receivers: int, workers: int) -> tuple[list[Connection], int]:
    """R receivers, R / W on each worker process: reconnect those that land on a full one."""
    per_worker = receivers // workers
    placed: list[Connection] = []
    on: Counter[int] = Counter()
    attempts = 0
    try:
        while len(placed) < receivers:
            attempts += 1
            if attempts > MAX_PLACEMENTS * receivers:
                raise RuntimeError(
                    f"receivers not spread over {workers} workers after {attempts - 1}"
                    f" connections: {dict(on)}"
                )
            conn = await connect(port, "/sub")
            if on[conn.pid] < per_worker:
                on[conn.pid] += 1
                placed.append(conn)
            else:
                await conn.aclose()
    except BaseException:
        for conn in placed:
            await conn.aclose()
        raise
    return placed, attempts


class Receiver:
    def __init__(self, conn: Connection, count: int, keep_delay: bool) -> None:
        self.conn = conn
        self.tally = Tally(count)
        self.keep_delay = keep_delay
        self.probed = trio.Event()
        self.done = trio.Event()
        self.error: str | None = None

    async def run(self) -> None:
        stream, ws, tally = self.conn.stream, self.conn.ws, self.tally
        buf = bytearray()
        try:
            while tally.received < tally.count:
                data = await stream.receive_some(65536)
                if not data:
                    self.error = "the server closed the connection"
                    return
                now = time.monotonic_ns()  # one clock read per read(): they arrived together
                buf += data
                frames, used = parse_frames(buf)
                del buf[:used]
                for opcode, payload in frames:
                    if opcode == OP_TEXT:
                        if payload[:1] == b"d":
                            tally.add(payload, now, self.keep_delay)
                        else:
                            self.probed.set()
                    elif opcode == OP_PING:
                        await stream.send_all(ws.send(Ping(payload).response()))
                    elif opcode == OP_CLOSE:
                        self.error = "the server closed the WebSocket"
                        return
        except (trio.BrokenResourceError, FrameError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()


async def _all_set(events: Sequence[trio.Event]) -> None:
    for event in events:
        await event.wait()


async def _probe(sender: Connection, receivers: list[Receiver]) -> None:
    """Probe until every receiver has seen one: every subscription is then live."""
    while True:
        await sender.stream.send_all(sender.ws.send(Message(data="probe")))
        with trio.move_on_after(PROBE_EVERY):
            await _all_set([r.probed for r in receivers])
            return


async def _burst(sender: Connection, count: int) -> None:
    send, ws = sender.stream.send_all, sender.ws
    for first in range(0, count, BATCH):
        now = time.monotonic_ns()
        await send(
            b"".join(
                ws.send(Message(data=data_message(seq, now)))
                for seq in range(first, min(first + BATCH, count))
            )
        )


async def _paced(sender: Connection, count: int, rate: int) -> None:
    start = trio.current_time()
    for seq in range(count):
        await trio.sleep_until(start + seq / rate)
        await sender.stream.send_all(
            sender.ws.send(Message(data=data_message(seq, time.monotonic_ns())))
        )


async def run(args: argparse.Namespace) -> dict[str, object]:
    """The leg; ``@bench go`` and ``@bench done`` are printed whatever happens, so the harness,
    which samples the servers' CPU at them, never waits for a leg that failed."""
    paced = args.mode == "paced"
    result: dict[str, object] = {"mode": args.mode, "count": args.count, "error": None}
    receivers: list[Receiver] = []
    conns: list[Connection] = []
    start = 0
    with trio.move_on_after(args.timeout) as scope:
        try:
            conns, result["connections"] = await place_receivers(
                args.port, args.receivers, args.workers
            )
            receivers = [Receiver(c, args.count, paced) for c in conns]
            result["spread"] = dict(Counter(str(c.pid) for c in conns))
            sender = await connect(args.port, "/pub")
            conns.append(sender)
            async with trio.open_nursery() as nursery:
                for r in receivers:
                    nursery.start_soon(r.run)
                await _probe(sender, receivers)
                emit("go")
                cpu0, start = time.process_time(), time.monotonic_ns()
                if paced:
                    await _paced(sender, args.count, args.rate)
                else:
                    await _burst(sender, args.count)
                result["send_s"] = (time.monotonic_ns() - start) / 1e9
                await _all_set([r.done for r in receivers])
                result["cpu_s"] = time.process_time() - cpu0
                emit("done")
        except (OSError, RuntimeError, trio.BrokenResourceError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for conn in conns:
                await conn.aclose()
    if scope.cancelled_caught:
        result["error"] = f"timed out after {args.timeout:g} s"
    if not start:
        emit("go")  # never reached: the harness is waiting for it
    if "cpu_s" not in result:
        emit("done")
    errors = sorted({r.error for r in receivers if r.error})
    if errors and result["error"] is None:
        result["error"] = "; ".join(errors)
    if receivers:
        tallies = [r.tally for r in receivers]
        last = max(t.last_ns for t in tallies)
        result["wall_s"] = (last - start) / 1e9 if last and start else 0.0
        result["received"] = [t.received for t in tallies]
        result["lost"] = sum(t.lost for t in tallies)
        result["duplicates"] = sum(t.duplicates for t in tallies)
        delays = sorted(d for t in tallies for d in t.delays_ns)
        if delays:
            result["p50_us"] = percentile(delays, 50) / 1e3
            result["p99_us"] = percentile(delays, 99) / 1e3
            result["max_us"] = delays[-1] / 1e3
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wsload", description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("mode", choices=("burst", "paced"))
    parser.add_argument("count", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--receivers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.receivers % args.workers:
        parser.error("--receivers must be a multiple of --workers (an even spread)")
    result = trio.run(run, args)
    args.out.write_text(json.dumps(result) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
