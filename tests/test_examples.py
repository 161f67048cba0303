"""The examples in examples/, run end to end with the real `stereo run` as the README shows."""

from __future__ import annotations

import json
import re
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import wsclient
from conftest import ROOT, Stereo, open_stereo

from stereo.worker.topics import DEFAULT_SUBSCRIBER_LIMIT

EXAMPLES = ROOT / "examples"
WEBCHAT = EXAMPLES / "webchat"
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
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
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


async def ask(address: tuple[str, int], line: bytes) -> str:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(line)
        data = b""
        while chunk := await stream.receive_some(65536):  # the example answers, then closes
            data += chunk
    return data.decode()


async def test_pool_jobs_run_in_the_job_pool_and_bring_their_exceptions_back() -> None:
    args = [*example_args("pool_jobs:serve"), "--pool", "2"]
    with trio.fail_after(60):
        async with open_stereo(*args, cwd=EXAMPLES) as stereo:
            address = await stereo.address()
            assert await ask(address, b"100\n") == "541\n"  # the 100th prime
            boom = await ask(address, b"boom\n")
            assert boom == (
                "ValueError('raised in a pool process'), raised at:"
                ' raise ValueError("raised in a pool process")\n'
            )
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_webchat_page_and_a_line_to_websockets_on_every_worker() -> None:
    with trio.fail_after(30):
        async with open_stereo(*example_args("app:app", app_dir=WEBCHAT), cwd=WEBCHAT) as stereo:
            host, port = await stereo.address()
            await all_ready(stereo, "webchat")
            head, _, body = (await http_get((host, port))).partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 200 OK\r\n")
            assert "<title>stereo webchat</title>" in body

            async with AsyncExitStack() as stack:
                # Connect until clients sit on two workers; the welcome names the worker.
                clients: list[wsclient.WSClient] = []
                welcomes: dict[int, dict[str, object]] = {}
                while len(welcomes) < 2 and len(clients) < 32:
                    client = await stack.enter_async_context(wsclient.connect(host, port, "/ws"))
                    welcome = json.loads(await client.receive())
                    assert welcome["type"] == "welcome"
                    clients.append(client)
                    welcomes.setdefault(welcome["worker"], welcome)
                assert len(welcomes) == 2, f"{len(clients)} clients all on worker(s) {welcomes}"

                sender = clients[0]
                hello = welcomes[next(iter(welcomes))]
                await sender.send_text("  hello over the hub  ")
                # Every client, on either worker, gets the line (trimmed) with the same hub seq.
                lines = [json.loads(await client.receive()) for client in clients]
                assert isinstance(lines[0]["seq"], int)
                expected = {"type": "line", "name": hello["name"], "worker": hello["worker"]}
                assert all(
                    line == {**expected, "text": "hello over the hub", "seq": lines[0]["seq"]}
                    for line in lines
                ), lines

                # A graceful stop closes every chat with 1012 (service restart), then exits 0.
                stereo.signal(signal.SIGTERM)
                for client in clients:
                    assert (await client.wait_closed())[0] == 1012
            assert await stereo.wait() == 0


async def test_webchat_closes_a_client_that_stops_reading_with_1013_after_its_lines() -> None:
    sent = 2 * DEFAULT_SUBSCRIBER_LIMIT  # well past the limit plus what TCP buffers hold
    padding = "x" * 900  # long lines (under MAX_LINE) fill the slow client's TCP buffers sooner
    with trio.fail_after(60):
        async with open_stereo(*example_args("app:app", app_dir=WEBCHAT), cwd=WEBCHAT) as stereo:
            host, port = await stereo.address()
            await all_ready(stereo, "webchat")
            async with (
                wsclient.connect(host, port, "/ws") as slow,
                wsclient.connect(host, port, "/ws") as talker,
            ):
                for client in (slow, talker):
                    assert json.loads(await client.receive())["type"] == "welcome"
                # The talker reads its own lines back a batch at a time, so it stays well within
                # the limit: only the slow client, which reads nothing yet, falls behind.
                lines = [f"{n} {padding}" for n in range(sent)]
                for start in range(0, sent, 256):
                    batch = lines[start : start + 256]
                    for line in batch:
                        await talker.send_text(line)
                    for line in batch:
                        assert json.loads(await talker.receive())["text"] == line
                # Now read: every line up to the cut, in order, then the close.
                texts = []
                with pytest.raises(wsclient.Closed) as closed:
                    while True:
                        texts.append(json.loads(await slow.receive())["text"])
                assert closed.value.code == 1013, closed.value
                assert DEFAULT_SUBSCRIBER_LIMIT <= len(texts) < sent
                assert texts == lines[: len(texts)]
                # The cut is the slow client's alone: the talker still chats.
                await talker.send_text("still here")
                assert json.loads(await talker.receive())["text"] == "still here"
