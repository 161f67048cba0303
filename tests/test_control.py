"""The control socket end to end: a real ``stereo run``, ``stereo ctl`` and raw clients."""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Stereo, ctl, open_stereo

from stereo.control.client import (
    DEFAULT_REQUEST_TIMEOUT,
    ControlClient,
    ControlTimeout,
    ControlUnreachable,
    default_control_path,
)
from stereo.control.server import bind_control_socket
from stereo.errors import ControlError, ProtocolError
from stereo.wire.control import decode_reply, decode_request, encode_request
from stereo.wire.framing import FrameReader, encode_frame
from stereo.wire.protocol import Kind

READY = r"^\[worker (\d+)\] ready$"
LISTENING = r"^\[stereo\] control socket: "


async def started(stereo: Stereo, workers: int) -> None:
    await stereo.wait_for(LISTENING)
    await stereo.wait_for(READY, count=workers)


@asynccontextmanager
async def control_master(tmp_path: Path, workers: int = 1) -> AsyncIterator[tuple[Stereo, str]]:
    """``stereo run control_app:serve`` with a control socket, once its workers are ready."""
    path = str(tmp_path / "ctl.sock")
    async with open_stereo("control_app:serve", "-w", str(workers), "--control", path) as stereo:
        await started(stereo, workers)
        yield stereo, path


def worker_pids(stereo: Stereo) -> set[int]:
    return {child.pid for child in stereo.children()}


# -- pure parts ---------------------------------------------------------------------------------


def test_request_and_reply_codec() -> None:
    reader = FrameReader(1024)
    data = encode_request(7, "inspect", {"id": 2})
    for byte in data[:-1]:  # byte by byte: nothing until the frame is whole
        reader.receive_data(bytes([byte]))
        assert reader.frames() == []
    reader.receive_data(data[-1:] + b"\x00\x00")  # plus the start of the next frame
    (frame,) = reader.frames()
    assert decode_request(frame) == (7, "inspect", {"id": 2})
    assert reader.buffered == 2
    with pytest.raises(ProtocolError, match="expected a REQUEST"):
        decode_request(type(frame)(Kind.HELLO, frame.body))
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        decode_request(type(frame)(Kind.REQUEST, b"\xff\xff"))
    with pytest.raises(ProtocolError, match="expected a REPLY"):
        decode_reply(frame)


def test_default_control_path(tmp_path: Path) -> None:
    assert default_control_path({"STEREO_CONTROL": "/x/y.sock"}) == "/x/y.sock"
    assert default_control_path({"XDG_RUNTIME_DIR": str(tmp_path)}) == str(
        tmp_path / "stereo" / "stereo.sock"
    )
    assert default_control_path({"XDG_RUNTIME_DIR": "/does/not/exist"}) == (
        f"/tmp/stereo-{os.geteuid()}/stereo.sock"
    )
    assert default_control_path({}) == f"/tmp/stereo-{os.geteuid()}/stereo.sock"


def test_bind_modes_stale_and_in_use(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "ctl.sock")
    sock = bind_control_socket(path)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(ControlError, match="another master is already listening"):
            bind_control_socket(path)
    finally:
        sock.close()
    bind_control_socket(path).close()  # a stale socket file is replaced
    os.chmod(tmp_path / "new", 0o777)
    with pytest.raises(ControlError, match="writable by other users"):
        bind_control_socket(path)
    with pytest.raises(ControlUnreachable, match="no master is listening"):
        ControlClient.connect(str(tmp_path / "none.sock"))
    with pytest.raises(ControlError, match=r": AF_UNIX path too long$"):  # not ": None"
        bind_control_socket(str(tmp_path / ("x" * 200)))


# -- against a real master ----------------------------------------------------------------------


async def test_ctl_status_json_and_commands(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "ctl.sock")
    with trio.fail_after(40):
        async with open_stereo("control_app:serve", "-w", "2", "--control", path) as stereo:
            await started(stereo, 2)
            assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

            code, out, err = await ctl("status", "--json", "--control", path)
            assert (code, err) == (0, "")
            rows = json.loads(out)
            assert {row["pid"] for row in rows} == worker_pids(stereo)
            assert [row["slot"] for row in rows] == [1, 2]
            for row in rows:
                assert set(row) >= {
                    "slot",
                    "pid",
                    "state",
                    "uptime",
                    "restarts",
                    "last_exit",
                    "rss",
                    "cpu_percent",
                    "messages_in",
                    "messages_out",
                    "outbox_bytes",
                    "outbox_fill",
                }

            code, out, _ = await ctl("--control", path, "status")
            assert code == 0 and out.splitlines()[0].split()[:2] == ["SLOT", "PID"]

            code, out, _ = await ctl("--control", path, "broadcast", '{"n": 1}')
            assert (code, out.strip()) == (0, "broadcast seq 1 to 2 workers")
            await stereo.wait_for(r'^\[worker [12]\] received \{"n": 1\} from 0$', count=2)

            code, out, err = await ctl("--control", path, "inspect", "7")
            assert code == 1 and out == ""
            assert err.strip() == "stereo ctl: there is no worker 7 (workers: 1, 2)"

            code, out, err = await ctl("--control", path, "--json", "inspect", "7")
            assert code == 1 and json.loads(out) == {
                "ok": False,
                "error": "there is no worker 7 (workers: 1, 2)",
            }

            code, _, err = await ctl("--control", path, "restart")
            assert code == 2 and "usage: restart ID... | restart all" in err

            code, out, _ = await ctl("--control", path, "shutdown")
            assert (code, out.strip()) == (0, "master is stopping gracefully")
            assert await stereo.wait() == 0
            assert not await trio.Path(path).exists()  # removed on the way out
            assert not any("Traceback" in line for line in stereo.lines)


async def test_ctl_without_a_master(tmp_path: Path) -> None:
    with trio.fail_after(20):
        code, out, err = await ctl("status", "--json", "--control", str(tmp_path / "no.sock"))
    assert code == 3
    assert json.loads(out)["ok"] is False
    assert "no master is listening on" in err and "Traceback" not in err


async def test_a_huge_add_or_scale_is_refused_at_once_and_the_master_serves_on(
    tmp_path: Path,
) -> None:
    # Unbounded, `add 100000000` froze the master: no relaying, no SIGTERM, ctl waiting forever.
    with trio.fail_after(40):
        async with control_master(tmp_path) as (stereo, path):
            code, out, err = await ctl("--control", path, "add", "100000000")
            assert (code, out) == (1, "")
            assert err == (
                "stereo ctl: add: 100000001 workers would be over the limit of 1024"
                " (--max-workers)\n"
            )
            code, _, err = await ctl("--control", path, "scale", "5000")
            assert code == 1 and "scale: 5000 workers would be over the limit of 1024" in err
            code, out, _ = await ctl("--control", path, "status", "--json")
            assert code == 0 and [row["slot"] for row in json.loads(out)] == [1]
            code, _, _ = await ctl("--control", path, "broadcast", "7")
            assert code == 0
            await stereo.wait_for(r"^\[worker 1\] received 7 from 0$")
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_a_hung_master_costs_its_clients_a_timeout_not_a_hang(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with control_master(tmp_path) as (stereo, path):
            client = ControlClient.connect(path, request_timeout=0.5)
            with client:
                with ControlClient.connect(path) as default:
                    assert default.request_timeout == DEFAULT_REQUEST_TIMEOUT
                assert math.isfinite(DEFAULT_REQUEST_TIMEOUT)
                stereo.signal(signal.SIGSTOP)  # the master hangs: the kernel still accepts
                try:
                    code, out, err = await ctl("--control", path, "--timeout", "1", "status")
                    assert (code, out) == (4, "")
                    assert err == (
                        "stereo ctl: the master did not answer 'status' within 1 s (it may be"
                        " hung, or still carrying it out)\n"
                    )
                    with pytest.raises(ControlTimeout, match=r"'stats' within 0\.5 s"):
                        await trio.to_thread.run_sync(client.request, "stats")
                finally:
                    stereo.signal(signal.SIGCONT)
                # The late answer to `stats` is skipped, not taken for the answer to `status`.
                rows = await trio.to_thread.run_sync(client.request, "status")
                assert [row["slot"] for row in rows] == [1]


async def test_ctl_broadcast_of_a_value_that_cannot_be_sent_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with control_master(tmp_path) as (stereo, path):
            for value, message in [
                ('"\\ud800"', "the value cannot be sent: cannot encode str as CBOR: 'utf-8' codec"),
                ("[" * 5000 + "]" * 5000, "the value is nested more than 256 levels deep"),
                ("1" * 5000, "cannot read the value: Exceeds the limit (4300 digits)"),
            ]:
                code, out, err = await ctl("--control", path, "broadcast", value, "--json")
                assert code == 2, err
                assert json.loads(out)["ok"] is False
                assert err.startswith(f"stereo ctl: broadcast: {message}") and err.count("\n") == 1
            # The client refuses what it cannot encode, whoever calls it.
            with ControlClient.connect(path) as client:
                with pytest.raises(ControlError, match="cannot send 'broadcast': cannot encode"):
                    client.request("broadcast", {"value": "\ud800"})
                assert [row["slot"] for row in client.request("status")] == [1]
            code, _, _ = await ctl("--control", path, "broadcast", "[" * 256 + "]" * 256)
            assert code == 0
            await stereo.wait_for(r"^\[worker 1\] received \[\[\[")


async def raw_exchange(path: str, data: bytes, half_close: bool = False) -> list[dict[str, Any]]:
    """Send bytes as they are; return every reply until the master closes or stops answering."""
    stream = await trio.open_unix_socket(path)
    replies: list[dict[str, Any]] = []
    reader = FrameReader(1 << 20)
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        with trio.move_on_after(2) as scope:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                reader.receive_data(chunk)
                replies.extend(decode_reply(frame) for frame in reader.frames())
        if scope.cancelled_caught:
            replies.append({"open": True})  # still connected, waiting for a next request
    return replies


async def test_garbage_gets_an_error_and_the_master_keeps_working(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    with trio.fail_after(40):
        async with open_stereo("control_app:serve", "-w", "2", "--control", path) as stereo:
            await started(stereo, 2)
            pids = worker_pids(stereo)

            # Text where a frame should be: its "length" is huge, so it is refused at once.
            (reply,) = await raw_exchange(path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reply["ok"] is False and "request too large" in reply["error"]
            # The same, with a megabyte behind it: the answer still arrives.
            (reply,) = await raw_exchange(path, b"\xff" * (1 << 20))
            assert reply["ok"] is False and "request too large" in reply["error"]
            # A frame of length 0.
            (reply,) = await raw_exchange(path, b"\x00\x00\x00\x00garbage")
            assert reply["ok"] is False and "malformed frame" in reply["error"]
            # Half a frame, then EOF.
            (reply,) = await raw_exchange(path, b"\x00\x00\x00\x10\x10abc", half_close=True)
            assert reply["ok"] is False and "inside a frame" in reply["error"]
            # Well framed nonsense is answered one by one, and the connection stays usable.
            replies = await raw_exchange(
                path,
                encode_frame(Kind.REQUEST, b"\xff\xfe")  # not CBOR
                + encode_frame(Kind.REQUEST, b"\x83\x01\x02\x03")  # CBOR, not a map
                + encode_frame(Kind.HELLO, b"\xa0")  # a hub frame
                + encode_request(1, "rm -rf /")
                + encode_request(2, "inspect", {"id": "one"})
                + encode_request(3, "status"),
            )
            assert [r.get("ok") for r in replies] == [False] * 5 + [True, None]
            assert "not valid CBOR" in replies[0]["error"]
            assert "CBOR map" in replies[1]["error"]
            assert "expected a REQUEST frame" in replies[2]["error"]
            assert replies[3] == {"id": 1, "ok": False, "error": "unknown command 'rm -rf /'"}
            assert replies[4]["id"] == 2 and "must be an integer" in replies[4]["error"]
            assert {row["pid"] for row in replies[5]["result"]} == pids

            # The master and its workers did not notice.
            code, out, _ = await ctl("--control", path, "status", "--json")
            assert code == 0 and {row["pid"] for row in json.loads(out)} == pids
            assert stereo.process.returncode is None
            assert not any("Traceback" in line for line in stereo.lines)


async def test_a_client_that_does_not_read_blocks_nobody(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    with trio.fail_after(40):
        async with open_stereo("control_app:serve", "-w", "1", "--control", path) as stereo:
            await started(stereo, 1)
            greedy = await trio.open_unix_socket(path)
            async with greedy:
                # Requests whose replies it never reads: the master stops reading from it once
                # its socket buffers are full; everyone else carries on.
                with trio.move_on_after(1):
                    while True:
                        await greedy.send_all(encode_request(1, "status") * 100)
                code, _, _ = await ctl("--control", path, "broadcast", "1")
                assert code == 0
                await stereo.wait_for(r"^\[worker 1\] received 1 from 0$")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stereo-ctl-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def exchange_as(uid: int, gid: int, path: str) -> bytes:
    """Fork, become ``uid``, send one status request to ``path``; return what came back
    (b"EACCES" if the connect itself was refused). The child touches no trio state."""
    read_end, write_end = os.pipe()
    request = encode_request(1, "status")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            try:
                client.connect(path)
            except PermissionError:
                os.write(write_end, b"EACCES")
            else:
                client.sendall(request)
                while chunk := client.recv(65536):
                    os.write(write_end, chunk)
                client.close()
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    async with trio.lowlevel.FdStream(read_end) as pipe:
        while chunk := await pipe.receive_some(65536):
            data += chunk
    _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return data


async def test_another_user_is_refused(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root to run a client as another user (nobody)")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("SKIPPED LOUDLY: there is no user 'nobody' to run a client as")
    path = str(shared_dir / "ctl.sock")
    with trio.fail_after(40):
        async with open_stereo("control_app:serve", "-w", "1", "--control", path) as stereo:
            await started(stereo, 1)
            # The file mode alone keeps others out...
            assert await exchange_as(nobody.pw_uid, nobody.pw_gid, path) == b"EACCES"
            # ...and if someone loosened it, the peer-credential check still refuses.
            os.chmod(path, 0o666)
            data = await exchange_as(nobody.pw_uid, nobody.pw_gid, path)
            reader = FrameReader(1 << 20)
            reader.receive_data(data)
            (reply,) = [decode_reply(frame) for frame in reader.frames()]
            assert reply == {
                "id": None,
                "ok": False,
                "error": f"permission denied: uid {nobody.pw_uid} may not control this master"
                " (it runs as uid 0)",
            }
            await stereo.wait_for(
                rf"^\[stereo\] control: refused a client running as uid {nobody.pw_uid}"
            )
            code, _, _ = await ctl("--control", path, "status")  # the owner (and root) may
            assert code == 0
