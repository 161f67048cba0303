"""A line-based TCP chat: a line from a client on any worker reaches the clients on every worker.

    stereo run chat:serve -w 4 --bind 127.0.0.1:8000 --app-dir examples
    nc 127.0.0.1 8000        # in two or more terminals; type lines

Each worker accepts its own clients on the shared socket. A client's line is broadcast; one task
per worker reads ``worker.messages()`` and hands every broadcast to the worker's local clients.
Every worker sees the broadcasts in one total order, so every client sees the conversation in the
same order, whichever worker it is connected to.

A slow client never slows anyone else: each client has a bounded queue of lines waiting to be
written to it, and a client whose queue is full is disconnected; the worker never blocks on it.
On a graceful stop (SIGTERM, or the rolling restart of SIGHUP) clients are told and disconnected,
so the worker drains at once instead of waiting for --graceful-timeout.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import trio

from stereo import Connection, HubClosed, MessageStream, Worker, exitcodes

# Lines waiting to be written to one client before it counts as too slow and is dropped.
CLIENT_QUEUE = 256
MAX_LINE = 4096
# How long a client gets to receive the goodbye line when the worker stops.
GOODBYE_TIMEOUT = 1.0


@dataclass(eq=False)
class Client:
    name: str
    stream: Connection
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def offer(self, line: bytes) -> bool:
        """Queue a line without waiting; False if the client cannot keep up."""
        try:
            self.send.send_nowait(line)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True


class Room:
    """The clients connected to this worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.clients: set[Client] = set()
        self._numbers = itertools.count(1)

    def new_name(self) -> str:
        return f"guest-{self.worker.id}.{next(self._numbers)}"

    def deliver(self, data: object, sender: int) -> None:
        if not isinstance(data, dict):
            return  # not a chat event
        kind, name = data.get("kind"), data.get("name")
        if kind == "say":
            line = f"<{name}> {data.get('text', '')}\n"
        elif kind == "join":
            line = f"* {name} joined on worker {sender}\n"
        elif kind == "leave":
            line = f"* {name} left\n"
        else:
            return
        encoded = line.encode()
        for client in list(self.clients):
            if client.name != name and not client.offer(encoded):
                self.drop(client)

    def drop(self, client: Client) -> None:
        print(f"dropping {client.name}: it does not read fast enough", flush=True)
        self.clients.discard(client)
        client.scope.cancel()


async def relay_broadcasts(room: Room, messages: MessageStream) -> None:
    """The one reader of this worker's broadcasts: fan each one out to the local clients."""
    async for message in messages:
        room.deliver(message.data, message.sender)


async def say_goodbye(room: Room) -> None:
    """On a graceful stop, queue a goodbye for every client and let its writer end the session."""
    await room.worker.stopping.wait()
    deadline = trio.current_time() + GOODBYE_TIMEOUT
    for client in list(room.clients):
        room.clients.discard(client)
        client.offer(b"* server restarting: please reconnect\n")
        client.send.close()  # the writer sends what is queued, then returns
        client.scope.deadline = deadline


async def lines_of(stream: Connection) -> AsyncIterator[str]:
    """Text lines received on the stream; a line longer than MAX_LINE is cut into pieces."""
    buffer = b""
    while data := await stream.receive_some(65536):
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        while len(buffer) > MAX_LINE:
            complete.append(buffer[:MAX_LINE])
            buffer = buffer[MAX_LINE:]
        for raw in complete:
            yield raw.decode("utf-8", errors="replace").rstrip("\r")


async def read_client(worker: Worker, client: Client, done: trio.CancelScope) -> None:
    async for text in lines_of(client.stream):
        if text:
            await worker.broadcast({"kind": "say", "name": client.name, "text": text})
    done.cancel()  # the client hung up


async def write_client(client: Client) -> None:
    async for line in client.receive:
        await client.stream.send_all(line)


async def handle_client(room: Room, stream: Connection) -> None:
    worker = room.worker
    send, receive = trio.open_memory_channel[bytes](CLIENT_QUEUE)
    client = Client(room.new_name(), stream, send, receive)
    async with stream:
        try:
            with client.scope:  # cancelled to drop the client
                room.clients.add(client)
                greeting = f"welcome to stereo chat: you are {client.name} on worker {worker.id}\n"
                client.offer(greeting.encode())
                await worker.broadcast({"kind": "join", "name": client.name})
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_client, worker, client, nursery.cancel_scope)
                    await write_client(client)  # returns after a goodbye
                    nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            room.clients.discard(client)
    try:
        worker.broadcast_nowait({"kind": "leave", "name": client.name})
    except (trio.WouldBlock, HubClosed):
        pass  # a departure notice is not worth waiting for


def require_socket(worker: Worker) -> None:
    if not worker.listeners:
        print("chat needs a socket: run it with --bind HOST:PORT", file=sys.stderr, flush=True)
        # The app cannot work as started: exit with the code that marks the slot failed at once
        # instead of restarting it in a loop.
        raise SystemExit(exitcodes.APP_LOAD_ERROR)


async def serve(worker: Worker) -> None:
    require_socket(worker)
    room = Room(worker)
    # Subscribe before accepting anyone, so a greeted client never misses a line.
    messages = worker.messages()
    print(f"chat: worker {worker.id} ready", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_broadcasts, room, messages)
        nursery.start_soon(say_goodbye, room)
        await trio.serve_listeners(partial(handle_client, room), worker.listeners)
