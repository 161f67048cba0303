"""--bind parsing and socket creation."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from stereo.errors import BindError
from stereo.master.binds import (
    FdBind,
    TcpBind,
    UnixBind,
    close_sockets,
    open_sockets,
    parse_bind,
    systemd_fds,
)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("127.0.0.1:8000", TcpBind("127.0.0.1", 8000)),
        ("localhost:0", TcpBind("localhost", 0)),
        ("[::1]:8080", TcpBind("::1", 8080)),
        ("unix:/tmp/x.sock", UnixBind("/tmp/x.sock")),
        ("fd://3", FdBind(3)),
    ],
)
def test_accepted_forms(spec: str, expected: object) -> None:
    assert parse_bind(spec) == expected
    assert str(parse_bind(spec)) == spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ("8000", "expected HOST:PORT"),
        (":8000", "host is missing"),
        ("host:http", "port must be a number"),
        ("host:70000", "port must be a number"),
        ("[::1]8000", "expected \\[IPv6\\]:PORT"),
        ("::1:8000", "expected HOST:PORT"),
        ("unix:", "needs a path"),
        ("fd://x", "file descriptor number"),
    ],
)
def test_rejected_forms_say_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(BindError, match=message):
        parse_bind(spec)


def test_systemd_fds_only_for_this_pid() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    assert systemd_fds(env, os.getpid()) == [3, 4]
    assert systemd_fds(env, os.getpid() + 1) == []
    assert systemd_fds({}, os.getpid()) == []


def test_unix_socket_is_created_then_removed_and_a_stale_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a file nobody listens on, as after a crash
    (bound,) = open_sockets([UnixBind(path)], [])
    assert bound.address == f"unix:{path}"
    with pytest.raises(BindError, match="another process is listening"):
        open_sockets([UnixBind(path)], [])
    close_sockets([bound])
    assert not os.path.exists(path)


def test_tcp_port_zero_reports_the_real_port_and_busy_ports_fail_cleanly() -> None:
    (bound,) = open_sockets([TcpBind("127.0.0.1", 0)], [])
    port = int(bound.address.rsplit(":", 1)[1])
    assert port > 0
    with pytest.raises(BindError, match=f"127.0.0.1:{port}"):
        open_sockets([TcpBind("127.0.0.1", port)], [])
    close_sockets([bound])


def test_fd_bind_adopts_an_inherited_listening_socket() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    (bound,) = open_sockets([FdBind(sock.detach())], [])
    assert bound.address.startswith("127.0.0.1:")
    close_sockets([bound])
