"""The client end of the control socket, for the console, ``stereo ctl`` and ``stereo top``.

Blocking (they run outside trio); the bytes are :mod:`stereo.wire.control`'s. Also where the
socket is when nobody says: :func:`default_control_path`, shared with ``stereo run``.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import Any

from ..errors import ControlError, EncodeError, ProtocolError
from ..wire.control import MAX_REPLY_SIZE, decode_reply, encode_request
from ..wire.framing import Frame, FrameReader

RECEIVE_SIZE = 64 * 1024
CONNECT_TIMEOUT = 5.0
#: How long a request waits for its answer unless told otherwise (``stereo ctl --timeout``): a
#: hung master must not hang its client too. Long, because ``restart`` answers only once every
#: replacement is ready.
DEFAULT_REQUEST_TIMEOUT = 60.0


class ControlUnreachable(ControlError):
    """No master answers at the control socket (none running, wrong path, or refused)."""


class ControlTimeout(ControlError):
    """The master did not answer in time: it is hung, or still carrying the command out."""


def default_control_path(environ: dict[str, str] | None = None) -> str:
    """``$STEREO_CONTROL`` if set; else ``$XDG_RUNTIME_DIR/stereo/stereo.sock`` when that runtime
    directory exists; else ``/tmp/stereo-$UID/stereo.sock``."""
    env = os.environ if environ is None else environ
    if env.get("STEREO_CONTROL"):
        return env["STEREO_CONTROL"]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "stereo", "stereo.sock")
    return os.path.join("/tmp", f"stereo-{os.geteuid()}", "stereo.sock")


class ControlClient:
    """One connection to a master's control socket. Raises ControlUnreachable when there is no
    master to talk to and ControlError when a command fails."""

    def __init__(
        self,
        sock: socket.socket,
        path: str = "",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.path = path
        self.request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._reader = FrameReader(MAX_REPLY_SIZE)
        self._frames: list[Frame] = []

    @classmethod
    def connect(
        cls,
        path: str,
        timeout: float = CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise ControlUnreachable(f"no master is listening on {path} (no such socket)") from None
        except ConnectionRefusedError:
            sock.close()
            raise ControlUnreachable(
                f"no master is listening on {path} (connection refused)"
            ) from None
        except PermissionError:
            sock.close()
            raise ControlUnreachable(
                f"not allowed to connect to {path} (permission denied)"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlUnreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        return cls(sock, path, request_timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, command: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one command and return its result; ControlTimeout when no answer came within
        ``timeout`` seconds (None: the client's ``request_timeout``)."""
        limit = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        request_id = next(self._ids)
        try:
            request = encode_request(request_id, command, args)
        except EncodeError as exc:
            raise ControlError(f"cannot send {command!r}: {exc}") from None
        try:
            self.sock.settimeout(limit)
            self.sock.sendall(request)
            reply = self._receive_reply(request_id, deadline)
        except TimeoutError:
            raise ControlTimeout(
                f"the master did not answer {command!r} within {limit:g} s (it may be hung, or"
                " still carrying it out)"
            ) from None
        except OSError as exc:
            raise ControlUnreachable(
                f"lost the connection to the master: {exc.strerror or exc}"
            ) from None
        if not reply["ok"]:
            raise ControlError(str(reply.get("error", "unknown error")))
        if reply.get("id") != request_id:
            raise ControlError(f"the master answered request {reply.get('id')!r}, not {request_id}")
        return reply.get("result")

    def _receive_reply(self, request_id: int, deadline: float) -> dict[str, Any]:
        """The reply to ``request_id``, skipping late replies to earlier requests that timed out
        (they would otherwise pass for the answer to this one)."""
        while True:
            reply = self._next_reply(deadline)
            answered = reply.get("id")
            if not (isinstance(answered, int) and answered < request_id):
                return reply

    def _next_reply(self, deadline: float) -> dict[str, Any]:
        while not self._frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            data = self.sock.recv(RECEIVE_SIZE)
            if not data:
                raise ControlUnreachable("the master closed the connection")
            try:
                self._reader.receive_data(data)
                self._frames.extend(self._reader.frames())
            except ProtocolError as exc:
                raise ControlError(f"the master sent a malformed reply: {exc}") from None
        try:
            return decode_reply(self._frames.pop(0))
        except ProtocolError as exc:
            raise ControlError(f"the master sent a malformed reply: {exc}") from None
