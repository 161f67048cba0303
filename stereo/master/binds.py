"""``--bind`` specifications and the listening sockets the master creates from them.

Accepted forms, as hypercorn and gunicorn spell them: ``HOST:PORT``, ``[IPv6]:PORT``,
``unix:PATH``, ``fd://N``; plus sockets handed over by systemd (``LISTEN_FDS``/``LISTEN_PID``).
Parsing is pure; :func:`open_sockets` does the binding, once, in the master.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from ..errors import BindError

BACKLOG = 2048
SD_LISTEN_FDS_START = 3
MAX_FD = 2**31 - 1  # a C int: socket(fileno=) overflows beyond it


@dataclass(frozen=True, slots=True)
class TcpBind:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixBind:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class FdBind:
    fd: int

    def __str__(self) -> str:
        return f"fd://{self.fd}"


Bind = TcpBind | UnixBind | FdBind


def parse_bind(spec: str) -> Bind:
    """Parse one --bind value; raise BindError with the accepted forms on anything else."""
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path:
            raise BindError(f"--bind {spec!r}: unix: needs a path")
        return UnixBind(path)
    if spec.startswith("fd://"):
        text = spec[len("fd://") :]
        # Length first: int() of thousands of digits raises, and a huge fd overflows later.
        if not (text.isdecimal() and len(text.lstrip("0")) <= 10 and int(text) <= MAX_FD):
            raise BindError(
                f"--bind {spec[:60]!r}: fd:// needs a file descriptor number (0 to {MAX_FD})"
            )
        return FdBind(int(text))
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise BindError(f"--bind {spec!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = spec.rpartition(":")
        if not sep or ":" in host:
            raise BindError(
                f"--bind {spec!r}: expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
            )
    if not (port_text.isdecimal() and len(port_text) <= 5 and int(port_text) <= 65535):
        raise BindError(f"--bind {spec[:60]!r}: port must be a number from 0 to 65535")
    if not host:
        raise BindError(f"--bind {spec!r}: the host is missing (use 0.0.0.0 to mean every address)")
    return TcpBind(host, int(port_text))


def systemd_fds(environ: dict[str, str] | os._Environ[str], pid: int) -> list[int]:
    """Descriptors systemd passed to this process by socket activation (sd_listen_fds(3))."""
    if environ.get("LISTEN_PID") != str(pid):
        return []
    count = environ.get("LISTEN_FDS", "")
    if not (count.isdecimal() and len(count) <= 6):  # not isdigit(): int('²') raises
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


@dataclass(slots=True)
class BoundSocket:
    bind: Bind
    sock: socket.socket
    created_path: str | None  # a unix socket file this master created and must remove

    @property
    def address(self) -> str:
        """Where it actually listens (the real port when 0 was asked for)."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp_socket(bind: TcpBind, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; with ``reuse_port``, a bound but *not listening* anchor instead:
    it holds the address (and its real port) while each worker slot listens on a socket of its
    own (:func:`slot_listener`). A listening anchor would take its share of the connections
    and never accept them."""
    try:
        infos = socket.getaddrinfo(
            bind.host, bind.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"--bind {bind}: cannot resolve {bind.host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        return _bound_tcp(family, address, reuse_port=reuse_port, listen=not reuse_port)
    except OSError as exc:
        raise BindError(f"--bind {bind}: {_reason(exc)}") from None


def _bound_tcp(family: int, address: Any, *, reuse_port: bool, listen: bool) -> socket.socket:
    """A TCP socket bound to ``address`` (closed again if anything fails)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def is_reuse_port_anchor(sock: socket.socket) -> bool:
    """A TCP socket bound with SO_REUSEPORT but not listening: an anchor of --reuse-port (ours,
    or adopted from the previous master in an upgrade)."""
    return (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    )


def slot_listener(anchor: socket.socket) -> socket.socket:
    """A listening socket of one worker slot on an anchor's address (SO_REUSEPORT: the kernel
    spreads new connections over the slots' sockets by a hash of the connection)."""
    return _bound_tcp(anchor.family, anchor.getsockname(), reuse_port=True, listen=True)


def _reason(exc: OSError) -> str:
    # Some OSErrors carry no strerror ("AF_UNIX path too long"): their text is the reason.
    return exc.strerror or str(exc)


def _unix_socket(bind: UnixBind) -> socket.socket:
    _clear_unix_path(bind)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(bind.path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(f"--bind {bind}: {_reason(exc)}") from None
    return sock


def _clear_unix_path(bind: UnixBind) -> None:
    """Remove a stale socket file at the path; refuse anything else there (a regular file, a
    directory, a dangling symbolic link), for which bind() would only say "Address already in
    use"."""
    path = bind.path
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise BindError(
                f"--bind {bind}: {path} is a symbolic link to nothing; not replacing it"
            ) from None
        return
    except OSError as exc:
        raise BindError(f"--bind {bind}: {_reason(exc)}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise BindError(f"--bind {bind}: {path} exists and is not a socket; not replacing it")
    _remove_if_stale(path)


def _remove_if_stale(path: str) -> None:
    """Unlink a socket file nobody listens on any more; refuse to steal a live one."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise BindError(f"--bind unix:{path}: {_reason(exc)}") from None
    else:
        raise BindError(f"--bind unix:{path}: another process is listening there")
    finally:
        probe.close()


def _fd_socket(fd: int, bind: Bind) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"--bind {bind}: {_reason(exc)}") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise BindError(f"--bind {bind}: not a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(f"--bind {bind}: {_reason(exc)}") from None
    except BindError:
        sock.close()
        raise
    return sock


def open_sockets(
    binds: list[Bind], inherited_fds: list[int], reuse_port: bool = False
) -> list[BoundSocket]:
    """Bind every requested address (all or nothing) plus any systemd-passed descriptors; with
    ``reuse_port``, TCP addresses get anchors (see :func:`_tcp_socket`)."""
    opened: list[BoundSocket] = []
    try:
        for bind in binds:
            if isinstance(bind, TcpBind):
                opened.append(BoundSocket(bind, _tcp_socket(bind, reuse_port), None))
            elif isinstance(bind, UnixBind):
                opened.append(BoundSocket(bind, _unix_socket(bind), bind.path))
            else:
                opened.append(BoundSocket(bind, _fd_socket(bind.fd, bind), None))
        for fd in inherited_fds:
            bind = FdBind(fd)
            opened.append(BoundSocket(bind, _fd_socket(fd, bind), None))
    except BaseException:
        close_sockets(opened)
        raise
    return opened


def close_sockets(sockets: list[BoundSocket]) -> None:
    for bound in sockets:
        bound.sock.close()
        if bound.created_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(bound.created_path)
            bound.created_path = None  # idempotent: never unlink a later owner's file
