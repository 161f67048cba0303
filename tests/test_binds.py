"""--bind parsing and socket creation."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio
from conftest import open_stereo

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
        # Numbers too long for what they name, and for int(): refused, not raised through.
        ("fd://2147483648", r"file descriptor number \(0 to 2147483647\)"),
        ("fd://00000000000000000000099999999999", "file descriptor number"),
        ("fd://" + "9" * 5000, "file descriptor number"),
        ("host:" + "9" * 5000, "port must be a number from 0 to 65535"),
        ("host:\u00b2", "port must be a number"),  # a digit ('²') that int() refuses
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
    for nonsense in ("\u00b2", "9" * 5000, "-1"):  # ignored, as any malformed value
        assert systemd_fds({**env, "LISTEN_FDS": nonsense}, os.getpid()) == []


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


def test_a_unix_bind_on_anything_but_a_socket_says_what_is_there(tmp_path: Path) -> None:
    regular = tmp_path / "data.txt"
    regular.write_text("keep me")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("data.txt", "dir"):
        path = tmp_path / name
        with pytest.raises(BindError) as info:
            open_sockets([UnixBind(str(path))], [])
        assert str(info.value) == (
            f"--bind unix:{path}: {path} exists and is not a socket; not replacing it"
        )
    with pytest.raises(BindError, match=r"is a symbolic link to nothing; not replacing it$"):
        open_sockets([UnixBind(str(tmp_path / "dangling"))], [])
    assert regular.read_text() == "keep me"
    # An error without an errno text said "None" here.
    with pytest.raises(BindError, match=r"AF_UNIX path too long$"):
        open_sockets([UnixBind(str(tmp_path / ("x" * 200)))], [])


async def test_stereo_run_refuses_a_unix_bind_on_a_regular_file_in_one_line(
    tmp_path: Path,
) -> None:
    regular = tmp_path / "notes"
    regular.write_text("keep me")
    with trio.fail_after(20):
        async with open_stereo("control_app:serve", "-w", "1", "--bind", f"unix:{regular}") as st:
            assert await st.wait() == 2
    assert st.lines == [
        f"stereo: --bind unix:{regular}: {regular} exists and is not a socket; not replacing it"
    ]
    assert regular.read_text() == "keep me"
