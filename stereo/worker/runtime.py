"""The worker process: ``python -m stereo.worker`` (started by the master) runs :func:`main`.

The master passes the worker's end of its hub connection as the file descriptor named by
``STEREO_HUB_FD``; everything else (slot, app, listening fds, limits) arrives in the WELCOME frame.
The worker's trio loop runs the app's ``serve``, the hub reader (its
:class:`~stereo.worker.intake.Intake`, into the worker's :class:`~stereo.worker.inbox.Inbox`;
an app task waiting for a message reads through it too), the hub writer (its
:class:`~stereo.outbox.Outbox`'s write loop), heartbeats and the signal handler; the
:class:`~stereo.worker.api.Worker` the app receives only holds the inbox and outbox. The end of
the hub connection ends the worker: that is how a killed master leaves no orphans.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import trio

from .. import exitcodes
from ..errors import AppStartError, HubClosed, ProtocolError
from ..outbox import DIRECT_SEND_GAP, Outbox
from ..wire.framing import FrameReader, encode_frame
from ..wire.protocol import (
    DEFAULT_INBOX_LIMIT,
    PROTOCOL_VERSION,
    BroadcastReader,
    Kind,
    decode_map,
    encode_map,
)
from . import current, stopsignals
from .api import Worker
from .inbox import Inbox
from .intake import CLOSED, RECEIVE_SIZE, Intake
from .listeners import ConnectionTracker, Listener
from .loader import App, BootError, load_app, resolve_interface

HANDSHAKE_LIMIT = 64 * 1024  # a WELCOME map is a few hundred bytes
FLUSH_TIMEOUT = 5.0  # seconds to deliver a finished app's last broadcasts
CLOSED_UNDER_US = "its descriptor was closed in this process, not by stereo (by the app?)"
NO_LISTENERS = (
    "trio.serve_listeners() was called but this worker has no listening socket: give"
    " `stereo run` a --bind (HOST:PORT, unix:PATH or fd://N)"
)


class HubLink:
    """The worker's side of the hub connection: the thin trio driver around the codecs."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.broadcasts: BroadcastReader | None = None

    async def _receive(self, size: int = RECEIVE_SIZE) -> bytes:
        data = await self.stream.receive_some(size)
        if not data:
            raise HubClosed(CLOSED)
        return data

    async def handshake(self) -> dict[str, Any]:
        """Send HELLO, read WELCOME; broadcasts already behind it are kept for the Intake."""
        await self.stream.send_all(
            encode_map(Kind.HELLO, {"version": PROTOCOL_VERSION, "pid": os.getpid()})
        )
        reader = FrameReader(HANDSHAKE_LIMIT)
        while (first := reader.next_frame()) is None:
            reader.append(await self._receive())
        if first.kind != Kind.WELCOME:
            raise ProtocolError("expected a WELCOME frame first")
        welcome = decode_map(first)
        if welcome.get("version") != PROTOCOL_VERSION:
            raise ProtocolError(f"master speaks protocol {welcome.get('version')!r}")
        self.broadcasts = BroadcastReader(int(welcome["max_message_size"]))
        self.broadcasts.receive_data(bytes(reader.take_buffer()))
        return welcome


async def heartbeat(outbox: Outbox, interval: float) -> NoReturn:
    frame = encode_frame(Kind.HEARTBEAT)
    while True:
        outbox.put(frame)  # a control frame: whatever the bound
        await trio.sleep(interval)


async def handle_signals(worker: Worker, drain: Callable[[], None]) -> None:
    def handle(signum: int) -> None:
        if signum == signal.SIGQUIT:
            raise SystemExit(exitcodes.STOPPED)  # quick stop: no drain
        drain()

    with trio.open_signal_receiver(*stopsignals.STOP_SIGNALS) as signals:
        # Listening from here on; what came before was remembered (stopsignals.defer).
        for signum in stopsignals.take():
            handle(signum)
        async for signum in signals:
            handle(signum)


def adopt_socket(fd: int) -> socket.socket:
    """Take over an inherited socket: the master passed it to this process only, so processes
    the app starts must not inherit it in turn (a forgotten child would keep the port bound, or
    the hub connection open, after the worker is gone)."""
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


async def run_worker(hub_fd: int) -> int:
    sock = adopt_socket(hub_fd)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    link = HubLink(stream)
    try:
        welcome = await link.handshake()
        # Before the app is imported: it may start processes as it loads.
        listen_socks = [adopt_socket(int(fd)) for fd in welcome.get("listen_fds", [])]
    except (
        ProtocolError,
        HubClosed,
        OSError,
        trio.BrokenResourceError,
        KeyError,
        ValueError,
    ) as exc:
        print(f"stereo worker: handshake with the master failed: {exc}", file=sys.stderr)
        return exitcodes.WORKER_BOOT_ERROR
    max_message_size = int(welcome["max_message_size"])

    if stopsignals.requested():  # asked to stop before the app even loaded: stopped
        return exitcodes.STOPPED
    try:
        app = load_app(str(welcome["app"]), str(welcome["app_dir"]))
        interface = resolve_interface(app, str(welcome.get("interface", "auto")))
    except BootError as exc:
        try:
            await stream.send_all(encode_map(Kind.BOOT_ERROR, {"reason": exc.reason}))
        except (trio.BrokenResourceError, OSError):
            # Only the master reports a reason it got (once, for every worker); this one it
            # did not get, so it goes to stderr.
            print(f"stereo worker: {exc.reason}", file=sys.stderr)
        return exc.code
    if stopsignals.requested():  # ...or while it loaded (an import may take its time)
        return exitcodes.STOPPED

    tracker = ConnectionTracker()
    listeners = [Listener(listen_sock, tracker) for listen_sock in listen_socks]
    outbox = Outbox(sock, int(welcome["outbox_limit"]), direct_gap=DIRECT_SEND_GAP)
    inbox = Inbox(max_bytes=int(welcome.get("inbox_limit", DEFAULT_INBOX_LIMIT)))
    worker = Worker(
        int(welcome["slot"]), listeners, tracker, max_message_size, outbox=outbox, inbox=inbox
    )
    current.install(worker)
    worker.jobs.pools = set(welcome.get("pools") or ())
    assert link.broadcasts is not None
    link.broadcasts.on_frame = worker.jobs.receive_frame
    intake = Intake(sock, link.broadcasts, inbox)
    # What exists now (the app's modules, stereo, trio) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it again and again while messages
    # come in (a tenth more broadcasts/s in the relay bench). docs/concepts.md says how to undo.
    gc.freeze()
    async with trio.open_nursery() as nursery:
        app_scope = trio.CancelScope()

        async def drain_then_stop() -> None:
            # Stop accepting first, then wait for accepted connections to finish; the master
            # enforces --graceful-timeout with SIGKILL, so no deadline is needed here.
            for listener in listeners:
                listener.stop_accepting()
            # Idle means: no accept still under way (one may hold a connection the kernel
            # already gave it) and no accepted connection open.
            await tracker.wait_idle()
            app_scope.cancel()

        def drain() -> None:
            if not worker.stopping.is_set():
                worker.stopping.set()
                nursery.start_soon(drain_then_stop)

        def ready() -> None:
            # READY is queued, so the writer task sends it only once the app has run up to
            # its next checkpoint: the master may count on this worker from then on.
            outbox.put(encode_frame(Kind.READY))

        async def run_app() -> None:
            with app_scope:
                try:
                    if interface == "asgi":
                        await serve_asgi_app(app, welcome.get("asgi", {}), worker, ready)
                    else:
                        ready()
                        await run_serve(app, worker)
                except* AppStartError as group:
                    exc = group.exceptions[0]
                    outbox.put(encode_map(Kind.BOOT_ERROR, {"reason": str(exc)}))
                    told = False
                    try:
                        with trio.move_on_after(FLUSH_TIMEOUT):
                            await outbox.wait_flushed()
                            told = True
                    finally:
                        # Not told: the master may never read it, so stderr (see above);
                        # unless the master is stopping this worker (its drain cancelled the
                        # wait), e.g. because another worker's boot error ended the start-up.
                        if not told and not worker.stopping.is_set():
                            print(f"stereo worker: {exc}", file=sys.stderr)
                    raise SystemExit(exitcodes.APP_LOAD_ERROR) from None
            # What the app broadcast before it ended still goes out (bounded: the master may
            # be gone, or not reading).
            with trio.move_on_after(FLUSH_TIMEOUT):
                await outbox.wait_flushed()
            nursery.cancel_scope.cancel()

        async def hub_tasks() -> None:
            try:
                async with trio.open_nursery() as hub_nursery:
                    hub_nursery.start_soon(intake.run)
                    hub_nursery.start_soon(outbox.write_loop, link.stream)
                    hub_nursery.start_soon(
                        heartbeat, outbox, float(welcome.get("heartbeat_interval", 1.0))
                    )
            except* (
                HubClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                ProtocolError,
                OSError,
            ) as group:
                error = group.exceptions[0]
                if group.subgroup(trio.ClosedResourceError) is not None:
                    # The worker never closes the hub while it runs: someone else in this
                    # process closed the descriptor (os.close, closerange). Not a crash of serve().
                    error = HubClosed(CLOSED_UNDER_US)
                    print(f"stereo worker: hub connection lost: {error}", file=sys.stderr)
                lost = error if isinstance(error, HubClosed) else HubClosed(str(error))
                inbox.close(lost)
                outbox.close(lost)
                raise SystemExit(exitcodes.HUB_LOST) from None

        nursery.start_soon(handle_signals, worker, drain)
        nursery.start_soon(hub_tasks)
        nursery.start_soon(run_app)
    return exitcodes.STOPPED


async def run_serve(app: App, worker: Worker) -> None:
    """Run a ``serve(worker)`` app. One that passes this worker's listeners to
    ``trio.serve_listeners`` when there are none (no --bind) meets trio's internal
    ``AssertionError``: a boot error, for want of a --bind, rather than a crash loop. Recognised
    by where it was raised and by the empty listeners, so no other assertion is taken for it."""
    try:
        await app(worker)
    except (AssertionError, BaseExceptionGroup) as exc:  # not except*: the rest stays unwrapped
        if not worker.listeners and _raised_in_serve_listeners(exc):
            raise AppStartError(NO_LISTENERS) from None
        raise


def _raised_in_serve_listeners(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_raised_in_serve_listeners(inner) for inner in exc.exceptions)
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return bool(frames) and frames[-1].f_code is trio.serve_listeners.__code__


async def serve_asgi_app(
    app: Any, options: dict[str, Any], worker: Worker, ready: Callable[[], None]
) -> None:
    # Imported here: a serve(worker) app never pays for the HTTP stack's imports.
    from ..asgi.server import serve_asgi
    from ..asgi.settings import AsgiSettings

    await serve_asgi(app, AsgiSettings.from_map(options), worker, ready)


def _first_exit_code(group: BaseExceptionGroup[SystemExit]) -> int:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_exit_code(exc)
        return exc.code if isinstance(exc.code, int) else 1
    return 1


def main() -> NoReturn:
    fd_text = os.environ.pop("STEREO_HUB_FD", "")
    if not fd_text.isdigit():
        print(
            "stereo worker: STEREO_HUB_FD is not set; workers are started by `stereo run`",
            file=sys.stderr,
        )
        raise SystemExit(exitcodes.WORKER_BOOT_ERROR)
    try:
        code = trio.run(run_worker, int(fd_text))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseExceptionGroup as group:
        exits, rest = group.split(SystemExit)
        if exits is None:
            raise
        if rest is not None:
            traceback.print_exception(rest)
        code = _first_exit_code(exits)
    sys.stdout.flush()
    sys.exit(code)
