"""The master's end of the control socket: where the socket lives and who may use it, and
:class:`ControlServer`, one task per connection, which runs each request's command
(:mod:`stereo.control.commands`) and answers it.

The bytes are :mod:`stereo.wire.control`'s (docs/protocol.md, "Control socket"). Whatever a
client sends costs that connection at most, never the master: every error is answered or closes
that connection only, and a client that does not read its replies is dropped after
``SEND_TIMEOUT``. Requests on one connection are answered one at a time, in order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
from typing import Any, Protocol

import trio

from ..errors import ControlError, ProtocolError
from ..wire.control import decode_request, encode_reply
from ..wire.framing import Frame, FrameReader, FrameTooLarge
from .commands import Context, Target, execute

#: Connections served at once; more are answered with an error and closed.
MAX_CONNECTIONS = 32
#: A client that leaves a reply unread this long is disconnected.
SEND_TIMEOUT = 10.0
#: How often rates and CPU percentages are sampled.
SAMPLE_INTERVAL = 1.0
RECEIVE_SIZE = 64 * 1024
#: After refusing a connection, how long and how much of its input is read and dropped.
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 4 * 1024 * 1024

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Log(Protocol):
    """The master's log: a line, and its level (``logging.INFO`` unless said)."""

    def __call__(self, line: str, level: int = logging.INFO) -> None: ...


# -- where the socket lives, and who may use it ---------------------------------------------------


def _prepare_directory(directory: str) -> None:
    """Create the socket's directory 0700; refuse one another user owns or could write to."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise ControlError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise ControlError(f"{directory} belongs to uid {info.st_uid}, not to us; refusing it")
    if info.st_mode & 0o022:
        raise ControlError(f"{directory} is writable by other users; refusing it")


def _clear_stale(path: str) -> None:
    """Remove a socket file no master listens on; refuse to replace a live one."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: left behind by a master that was killed
    else:
        raise ControlError(f"another master is already listening on {path}")
    finally:
        probe.close()


def bind_control_socket(path: str) -> socket.socket:
    """Bind and listen on ``path`` (mode 0600, in a 0700 directory). Raises ControlError."""
    _prepare_directory(os.path.dirname(os.path.abspath(path)))
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is reachable by others
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return sock


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket, as the kernel saw it."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, _gid = _PEERCRED.unpack(raw)
    return pid, uid


# -- the server ----------------------------------------------------------------------------------


class ControlServer:
    """Serves control connections for one master: from the socket at ``path`` (if any) and from
    streams handed to :meth:`serve_stream` (the in-place console's socketpair)."""

    def __init__(
        self,
        target: Target,
        *,
        path: str | None,
        max_request_size: int,
        log: Log,
    ) -> None:
        self.path = path
        self.context = Context(target)
        self.max_request_size = max_request_size
        self.log = log
        self.connections = 0
        self._client_arrived = trio.Event()
        self.listening: str | None = None  # the path, once bound
        self._inode: tuple[int, int] | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener: socket.socket | None = None
        if self.path is not None:
            try:
                listener = bind_control_socket(self.path)
                info = os.stat(self.path)
                self._inode = (info.st_dev, info.st_ino)
                self.listening = self.path
                self.log(f"control socket: {self.path}")
            except ControlError as exc:
                # The app matters more than its console: run on, but say so loudly.
                self.log(f"control socket disabled: {exc} (use --control PATH)", logging.WARNING)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sample)
                if listener is not None:
                    nursery.start_soon(self._accept_loop, trio.socket.from_stdlib_socket(listener))
                task_status.started()
        finally:
            if listener is not None:
                listener.close()
            self._unlink()

    def _unlink(self) -> None:
        """Remove our socket file, unless another master has replaced it meanwhile."""
        if self.path is None or self._inode is None:
            return
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)

    async def _sample(self) -> None:
        # Only while someone is connected: an idle master with nobody watching never wakes for
        # this (psutil reads /proc for every worker). A sample after a quiet spell averages
        # over the whole spell, which is still a true figure.
        while True:
            while not self.connections:
                self._client_arrived = trio.Event()
                await self._client_arrived.wait()  # serve_stream samples on arrival
            await trio.sleep(SAMPLE_INTERVAL)
            self.context.sample()

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        while True:
            try:
                sock, _ = await listener.accept()
            except OSError as exc:
                # Out of descriptors or memory: wait for a connection to end, don't spin or die.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    self.log(f"control: accept failed ({exc.strerror}); pausing")
                    await trio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            assert self._nursery is not None
            self._nursery.start_soon(self.serve_stream, trio.SocketStream(sock), False)

    async def serve_stream(self, stream: trio.SocketStream, trusted: bool = False) -> None:
        """Serve one client until it disconnects. Never raises (except Cancelled)."""
        self.connections += 1
        if not self._client_arrived.is_set():
            # First client after a quiet spell: fresh figures before its first command.
            self.context.sample()
            self._client_arrived.set()
        try:
            async with stream:
                await self._serve(stream, trusted)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass  # the client went away or stopped reading: its problem only
        except Exception as exc:  # a bug of ours: cost this connection, never the master
            self.log(f"control: internal error, connection dropped: {exc!r}", logging.ERROR)
        finally:
            self.connections -= 1

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        with trio.fail_after(SEND_TIMEOUT):
            await stream.send_all(data)

    async def _serve(self, stream: trio.SocketStream, trusted: bool) -> None:
        if not trusted:
            pid, uid = peer_uid(stream.socket)
            if uid not in (os.geteuid(), 0):
                self.log(
                    f"control: refused a client running as uid {uid} (pid {pid})", logging.WARNING
                )
                await self._refuse(
                    stream,
                    f"permission denied: uid {uid} may not control this master"
                    f" (it runs as uid {os.geteuid()})",
                )
                return
            if self.connections > MAX_CONNECTIONS:
                await self._refuse(stream, "too many control connections; try later")
                return
        reader = FrameReader(self.max_request_size)
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                if reader.buffered:
                    await self._send(
                        stream, encode_reply(None, error="connection ended inside a frame")
                    )
                return
            try:
                reader.receive_data(data)
                frames = reader.frames()
            except FrameTooLarge as exc:
                # The rest of the stream cannot be framed any more.
                await self._refuse(stream, f"request too large: {exc}")
                return
            except ProtocolError as exc:
                await self._refuse(stream, f"malformed frame: {exc}")
                return
            for frame in frames:
                await self._send(stream, await self._answer(frame))

    async def _refuse(self, stream: trio.SocketStream, message: str) -> None:
        """Answer with an error and end the connection. Closing a unix socket with unread input
        makes the client's recv fail (ECONNRESET) before it reads our answer, so read and drop
        what it sent, within bounds, first."""
        await self._send(stream, encode_reply(None, error=message))
        await stream.send_eof()
        dropped = 0
        with trio.move_on_after(LINGER_TIMEOUT):
            while dropped < LINGER_BYTES:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                dropped += len(data)

    async def _answer(self, frame: Frame) -> bytes:
        request_id: Any = None
        try:
            request_id, command, args = decode_request(frame)
            if not isinstance(request_id, int | str | None) or isinstance(request_id, bool):
                request_id = None
                raise ProtocolError("'id' must be an integer or a string")
            result = await execute(self.context, command, args)
            return encode_reply(request_id, result=result)
        except ProtocolError as exc:
            return encode_reply(request_id, error=f"malformed request: {exc}")
        except ControlError as exc:
            return encode_reply(request_id, error=str(exc))
        except Exception as exc:
            self.log(f"control: command failed with an internal error: {exc!r}", logging.ERROR)
            return encode_reply(request_id, error=f"internal error: {type(exc).__name__}: {exc}")
