"""Operations options with real masters: --user/--group (workers as nobody/nogroup on a privileged
port the master bound as root), --umask, --chdir, and the --pid file's life: written, refused
while a live master holds it, replacing a stale one, handed to the new master by an upgrade,
removed at exit."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trio
from conftest import APPS, open_stereo, stereo_command, wait_exited
from test_faults import started
from test_upgrade import kill_tree

from stereo.errors import ConfigError
from stereo.master.pidfile import looks_like_stereo_run
from stereo.master.privileges import SpawnOptions, parse_umask, resolve_identity

WHOAMI = """\
import os
import trio


async def serve(worker):
    path = os.path.join(os.environ["OPS_OUT"], f"w{worker.id}")
    with open(path, "w") as file:
        file.write("made by the app")
    groups = ",".join(str(g) for g in sorted(os.getgroups()))
    print(f"uid {os.getuid()} gid {os.getgid()} groups {groups} cwd {os.getcwd()}", flush=True)

    async def handler(stream):
        await stream.send_all(f"uid {os.getuid()}\\n".encode())

    await trio.serve_listeners(handler, worker.listeners)
"""
WHO = r"^\[worker (\d+)\] uid (\d+) gid (\d+) groups ([\d,]*) cwd (.*)$"


def nobody() -> tuple[int, int]:
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody user or nogroup group here")


def reachable_by_all(path: str) -> bool:
    """Whether every directory down to ``path`` lets others in, and others may run it."""
    real = Path(os.path.realpath(path))
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [real, *real.parents])


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="stereo-ops-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def interpreter_for_others(shared: Path) -> str:
    """An interpreter other users can run, with this environment's packages: ours if it is
    reachable, else a venv of the system's same-version python pointing at our site-packages
    (here, ours lives under /root, which only root may enter)."""
    if reachable_by_all(sys.executable):
        return sys.executable
    base = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin")
    if base is None or not reachable_by_all(base):
        pytest.skip("no python interpreter other users may run")
    venv = shared / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    ours = sysconfig.get_paths()["purelib"]
    (site / "site-packages" / "stereo_tests.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    if not reachable_by_all(ours):
        pytest.skip("this environment's packages are not readable by other users")
    return str(venv / "bin" / "python")


def free_privileged_port() -> int:
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return port
    pytest.skip("no free port below 1024")


def test_spawn_options_become_popen_arguments() -> None:
    assert SpawnOptions().popen_options() == {}
    identity = resolve_identity("root", None)
    assert identity is not None
    assert (identity.uid, identity.gid) == (0, 0)
    assert identity.groups == tuple(sorted(set(os.getgrouplist("root", 0))))
    options = SpawnOptions(identity, 0o27).popen_options()
    assert options == {"user": 0, "group": 0, "extra_groups": list(identity.groups), "umask": 0o27}
    assert parse_umask("0o027") == parse_umask("027") == 0o27
    with pytest.raises(ValueError, match="not an octal umask"):
        parse_umask("8")


def test_a_numeric_uid_without_a_passwd_entry_needs_a_group() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _uid, gid = nobody()
    unknown = next(u for u in range(54321, 60000) if not _has_passwd_entry(u))
    with pytest.raises(ConfigError, match=f"uid {unknown} has no passwd entry; give --group"):
        resolve_identity(str(unknown), None)
    identity = resolve_identity(str(unknown), "nogroup")
    assert identity is not None
    assert (identity.uid, identity.gid, identity.groups) == (unknown, gid, (gid,))
    assert identity.description == f"{unknown} (uid {unknown}), group nogroup (gid {gid})"


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_stereo_master_is_told_from_other_processes() -> None:
    assert looks_like_stereo_run(["/venv/bin/python3", "-m", "stereo", "run", "app:serve"])
    assert looks_like_stereo_run(["/venv/bin/stereo", "run", "app:serve", "-w", "2"])
    assert not looks_like_stereo_run(["/venv/bin/stereo", "ctl", "status"])
    assert not looks_like_stereo_run(["python", "-m", "pytest", "tests/test_stereo.py", "run"])
    assert not looks_like_stereo_run(["vim", "stereo"])


async def test_workers_run_as_nobody_on_a_privileged_port_the_master_bound_as_root(
    shared_dir: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    uid, gid = nobody()
    python = interpreter_for_others(shared_dir)
    app_dir = shared_dir / "app"
    app_dir.mkdir(mode=0o755)
    (app_dir / "whoami.py").write_text(WHOAMI)
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    control = shared_dir / "control" / "stereo.sock"
    pid_file = shared_dir / "master.pid"
    port = free_privileged_port()
    args = (
        "whoami:serve",
        "-w",
        "2",
        "--app-dir",
        str(app_dir),
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--umask",
        "027",
        "--bind",
        f"127.0.0.1:{port}",
        "--control",
        str(control),
        "--pid",
        str(pid_file),
        # The bridge drops privileges too; nothing listens on port 1, so it keeps retrying.
        "--bridge",
        "redis://127.0.0.1:1/0",
        "--graceful-timeout",
        "5",
    )
    with trio.fail_after(90):
        async with open_stereo(
            *args, env={"OPS_OUT": str(out)}, cwd=shared_dir, python=python
        ) as stereo:
            await stereo.wait_for(
                rf"^\[stereo\] workers run as nobody \(uid {uid}\), group nogroup \(gid {gid}\),"
                r" umask 027$"
            )
            whos = await stereo.wait_for(WHO, count=2)
            for who in whos:
                assert (int(who[2]), int(who[3])) == (uid, gid)
                assert who[4] == str(gid)  # nogroup only: root's groups are gone
            # The app's files: its user's, with the umask applied (0666 & ~027).
            for slot in (1, 2):
                made = (out / f"w{slot}").stat()
                assert (made.st_uid, made.st_gid) == (uid, gid)
                assert stat.S_IMODE(made.st_mode) == 0o640
            # It serves on the port only root could bind.
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                assert (await stream.receive_some(100)).strip() == f"uid {uid}".encode()
            # The master stays root and keeps what is its own: the control socket, owner-only.
            assert psutil.Process(stereo.pid).uids().real == 0
            info = control.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
            assert stat.S_IMODE(control.parent.stat().st_mode) == 0o700
            assert pid_file.read_text() == f"{stereo.pid}\n"
            await stereo.wait_for(r"^\[bridge\] broker unavailable")
            bridges = [p for p in stereo.children() if "stereo.bridge" in p.cmdline()]
            assert [p.uids().real for p in bridges] == [uid]
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
    assert not pid_file.exists()


async def refused(
    *args: str, python: str = sys.executable, cwd: Path = APPS, user: int | None = None
) -> str:
    """Run ``stereo run ARGS``, which must exit 2 with one line on stderr; that line."""
    result = await trio.run_process(
        [python, "-m", "stereo", "run", *args, "--no-console"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
        user=user,
    )
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and not result.stdout, result
    return lines[0]


async def test_a_user_that_cannot_be_had_is_refused_before_anything_starts(
    shared_dir: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    uid, _gid = nobody()
    with trio.fail_after(60):
        assert await refused("pids:serve", "--user", "no-such-user-here") == (
            "stereo: --user 'no-such-user-here': no such user"
        )
        assert await refused("pids:serve", "--group", "no-such-group-here") == (
            "stereo: --group 'no-such-group-here': no such group"
        )
        python = interpreter_for_others(shared_dir)
        line = await refused(
            "pids:serve", "--user", "root", python=python, cwd=shared_dir, user=uid
        )
        assert line == (
            f"stereo: --user root: only root can start the workers as another user or group"
            f" (this master runs as uid {uid})"
        )
        assert (
            "not an octal umask"
            in (
                await trio.run_process(
                    stereo_command("run", "pids:serve", "--umask", "0999"),
                    capture_stderr=True,
                    check=False,
                )
            ).stderr.decode()
        )


async def test_chdir_comes_first_and_the_umask_reaches_the_app(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "src").mkdir(parents=True)
    (site / "run").mkdir()
    (site / "src" / "whoami.py").write_text(WHOAMI)
    args = (
        "whoami:serve",
        "-w",
        "1",
        "--chdir",
        "site",  # relative to where the master starts; everything after, relative to it
        "--app-dir",
        "src",
        "--pid",
        "run/master.pid",
        "--umask",
        "077",
        "--control",
        str(tmp_path / "control" / "stereo.sock"),
    )
    with trio.fail_after(60):
        async with open_stereo(*args, env={"OPS_OUT": "."}, cwd=tmp_path) as stereo:
            who = (await stereo.wait_for(WHO))[0]
            assert who[5] == str(site)
            assert (site / "run" / "master.pid").read_text() == f"{stereo.pid}\n"
            assert stat.S_IMODE((site / "w1").stat().st_mode) == 0o600
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
    assert not (site / "run" / "master.pid").exists()
    assert await refused("whoami:serve", "--chdir", str(tmp_path / "nowhere")) == (
        f"stereo: --chdir {tmp_path}/nowhere: No such file or directory"
    )


# -- the pid file ----------------------------------------------------------------------------------


def pid_args(tmp_path: Path, pid_file: Path, *more: str) -> tuple[str, ...]:
    return (
        "pids:serve",
        "-w",
        "1",
        "--bind",
        "127.0.0.1:0",
        "--pid",
        str(pid_file),
        "--control",
        str(tmp_path / "control" / "stereo.sock"),
        *more,
    )


async def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    result = await trio.run_process(["sh", "-c", "echo $$"], capture_stdout=True)
    return int(result.stdout)


@pytest.mark.parametrize("holder", ["dead", "not a master"])
async def test_a_stale_pid_file_is_replaced(tmp_path: Path, holder: str) -> None:
    pid_file = tmp_path / "master.pid"
    stale = await dead_pid() if holder == "dead" else os.getpid()  # this test: no master
    pid_file.write_text(f"{stale}\n")
    with trio.fail_after(60):
        async with open_stereo(*pid_args(tmp_path, pid_file)) as stereo:
            await stereo.wait_for(
                rf"removed stale pid file {pid_file} \(pid {stale} is not a running master\)"
            )
            await started(stereo, 1)
            assert pid_file.read_text() == f"{stereo.pid}\n"
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
    assert not pid_file.exists()


async def test_a_live_master_s_pid_file_refuses_a_second_master_before_it_binds(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "master.pid"
    unix = tmp_path / "second.sock"
    with trio.fail_after(60):
        async with open_stereo(*pid_args(tmp_path, pid_file)) as stereo:
            await started(stereo, 1)
            line = await refused(*pid_args(tmp_path / "second", pid_file, "--bind", f"unix:{unix}"))
            assert line == (
                f"stereo: --pid {pid_file}: master pid {stereo.pid} is running; stop it first"
                " (or upgrade it in place with SIGUSR2)"
            )
            assert not unix.exists()  # nothing was bound
            assert pid_file.read_text() == f"{stereo.pid}\n"
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
    # A file that holds no pid may be anything: it is never overwritten.
    pid_file.write_text("not a pid\n")
    assert await refused(*pid_args(tmp_path, pid_file)) == (
        f"stereo: --pid {pid_file}: exists and does not hold a pid; refusing to overwrite it"
    )
    assert pid_file.read_text() == "not a pid\n"


async def test_an_upgrade_hands_the_pid_file_to_the_new_master(tmp_path: Path) -> None:
    pid_file = tmp_path / "master.pid"
    new_master: int | None = None
    try:
        with trio.fail_after(120):
            async with open_stereo(*pid_args(tmp_path, pid_file)) as stereo:
                await started(stereo, 1)
                stereo.signal(signal.SIGUSR2)
                match = await stereo.wait_for(r"SIGUSR2: started new master pid (\d+)")
                new_master = int(match[0][1])
                await stereo.wait_for(rf"took over from master pid {stereo.pid}")
                assert pid_file.read_text() == f"{new_master}\n"
                assert await stereo.process.wait() == 0
                # The old master left without removing its successor's file.
                assert pid_file.read_text() == f"{new_master}\n"
                os.kill(new_master, signal.SIGTERM)
                await wait_exited(new_master)
                new_master = None
                assert not pid_file.exists()
    finally:
        kill_tree(new_master)
