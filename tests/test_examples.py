"""The examples in examples/, run end to end with the real `stereo run` as the README shows."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import trio
from conftest import ROOT, Stereo, open_stereo

EXAMPLES = ROOT / "examples"
WORKERS = 4


def example_args(app: str, *, bind: bool = True, app_dir: Path = EXAMPLES) -> list[str]:
    args = [app, "-w", str(WORKERS), "--app-dir", str(app_dir), "--graceful-timeout", "10"]
    return [*args, "--bind", "127.0.0.1:0"] if bind else args


async def all_ready(stereo: Stereo, name: str) -> None:
    """Wait until every worker printed its ready line, i.e. is accepting."""
    matches = await stereo.wait_for(rf"^\[worker (\d+)\] {name}: worker \d+ ready$", count=WORKERS)
    assert {int(m[1]) for m in matches} == set(range(1, WORKERS + 1))


class LineClient:
    """A TCP client reading whole lines, for the chat."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.lines: list[str] = []

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> LineClient:
        return cls(await trio.open_tcp_stream(*address))

    async def read_line(self) -> str | None:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        raw, self.buffer = self.buffer.split(b"\n", 1)
        line = raw.decode()
        self.lines.append(line)
        return line

    async def read_until(self, pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        while True:
            line = await self.read_line()
            assert line is not None, f"connection closed before a line matched {pattern!r}"
            if match := regex.search(line):
                return match

    async def send_line(self, text: str) -> None:
        await self.stream.send_all(text.encode() + b"\n")


async def test_chat_delivers_a_line_to_clients_on_every_worker() -> None:
    with trio.fail_after(30):
        async with open_stereo(*example_args("chat:serve"), cwd=EXAMPLES) as stereo:
            address = await stereo.address()
            await all_ready(stereo, "chat")
            # Connect until clients sit on at least two workers; the greeting names the worker.
            by_worker: dict[int, LineClient] = {}
            clients: list[LineClient] = []
            names: dict[LineClient, str] = {}
            while len(by_worker) < WORKERS and len(clients) < 64:
                client = await LineClient.connect(address)
                greeting = await client.read_until(r"you are (\S+) on worker (\d+)$")
                clients.append(client)
                names[client] = greeting[1]
                by_worker.setdefault(int(greeting[2]), client)
                if len(by_worker) >= 2 and len(clients) >= 16:
                    break  # enough to prove the point, even if the kernel favours some workers
            assert len(by_worker) >= 2, f"every connection went to one worker: {by_worker}"

            sender_worker, sender = next(iter(by_worker.items()))
            name = names[sender]
            text = f"hello from worker {sender_worker} to everyone"
            await sender.send_line(text)
            # Every other client, on whichever worker, receives the line exactly as sent.
            async with trio.open_nursery() as nursery:
                for client in clients:
                    if client is not sender:
                        nursery.start_soon(client.read_until, f"^<{re.escape(name)}> {text}$")

            # A graceful stop says goodbye to the clients and exits 0.
            stereo.signal(signal.SIGTERM)
            await clients[-1].read_until(r"^\* server restarting")
            assert await stereo.wait() == 0
            for client in clients:
                await client.stream.aclose()


async def http_get(address: tuple[str, int]) -> str:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        response = b""
        while data := await stream.receive_some(65536):
            response += data
    return response.decode()


async def test_whoami_is_answered_by_several_workers_through_one_socket() -> None:
    with trio.fail_after(30):
        async with open_stereo(*example_args("whoami:serve"), cwd=EXAMPLES) as stereo:
            address = await stereo.address()
            await all_ready(stereo, "whoami")
            pids: dict[int, set[int]] = {}
            for _ in range(200):
                response = await http_get(address)
                head, _, body = response.partition("\r\n\r\n")
                assert head.startswith("HTTP/1.1 200 OK\r\n")
                assert f"Content-Length: {len(body.encode())}\r\n" in head
                match = re.fullmatch(r"worker (\d+) \(pid (\d+)\)\n", body)
                assert match, body
                pids.setdefault(int(match[1]), set()).add(int(match[2]))
                if len(pids) >= 3:
                    break
            assert len(pids) >= 2, f"only worker(s) {sorted(pids)} answered"
            assert set(pids) <= set(range(1, WORKERS + 1))
            # One process per worker id, and different ids are different processes.
            assert all(len(p) == 1 for p in pids.values()), pids
            assert len(set().union(*pids.values())) == len(pids)
            worker_pids = {child.pid for child in stereo.children()}
            assert set().union(*pids.values()) <= worker_pids

            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_pool_completes_every_job_exactly_once() -> None:
    report = r"^\[worker (\d+)\] all (\d+) jobs done; this worker ran (\d+); checksum (\w+)$"
    with trio.fail_after(30):
        async with open_stereo(*example_args("pool:serve", bind=False), cwd=EXAMPLES) as stereo:
            reports = await stereo.wait_for(report, count=WORKERS)
            total = int(reports[0][2])
            # Every worker holds the same ledger: the same jobs, the same results.
            assert {int(m[1]) for m in reports} == set(range(1, WORKERS + 1))
            assert len({m[4] for m in reports}) == 1, [m[0] for m in reports]

            done = [
                int(m[2])
                for line in stereo.lines
                if (m := re.match(r"^\[worker (\d+)\] job (\d+) done: \w+$", line))
            ]
            assert sorted(done) == list(range(1, total + 1)), "a job ran twice or never"
            assert sum(int(m[3]) for m in reports) == total

            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
