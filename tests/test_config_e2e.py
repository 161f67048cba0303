"""``stereo run`` configured from a TOML file, pyproject.toml and the environment, observed on a
real master: the worker count it runs, the address it listens on, what --print-config says, the
one-line errors, and a master upgrade (SIGUSR2) that reads the changed file again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from conftest import APPS, Stereo, ctl, open_stereo, stereo_command, wait_exited

STARTED = r"^\[worker (\d+)\] started pid=(\d+)$"


def toml_path(path: Path | str) -> str:
    return json.dumps(str(path))


async def status(control: Path) -> list[dict[str, object]]:
    code, out, err = await ctl("--control", str(control), "status", "--json")
    assert (code, err) == (0, ""), err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


async def run_stereo(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``stereo run ARGS`` to its end (for --print-config and errors): status, stdout, stderr."""
    with trio.fail_after(30):
        result = await trio.run_process(
            stereo_command("run", *args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def serves(
    stereo: Stereo, control: Path, workers: int, connect: Callable[[], Awaitable[trio.abc.Stream]]
) -> None:
    """The master runs ``workers`` workers, one of them answers on the stream ``connect``
    opens (the pids app), and it stops cleanly."""
    await stereo.wait_for(STARTED, count=workers)
    assert [row["slot"] for row in await status(control)] == list(range(1, workers + 1))
    async with await connect() as stream:
        assert re.match(rb"worker \d+ pid \d+\n", await stream.receive_some())
    stereo.signal(signal.SIGTERM)
    assert await stereo.wait() == 0


async def test_a_config_file_under_the_environment_and_the_command_line(tmp_path: Path) -> None:
    control = tmp_path / "ctl.sock"
    (tmp_path / "stereo.toml").write_text(
        f'app = "nosuch:serve"\napp-dir = {toml_path(APPS)}\nworkers = 1\n'
        f'bind = ["127.0.0.1:0"]\ncontrol = {toml_path(control)}\nno-console = true\n'
    )
    with trio.fail_after(60):
        async with open_stereo(
            "-c", "stereo.toml", "pids:serve", cwd=tmp_path, env={"STEREO_WORKERS": "2"}
        ) as stereo:

            async def connect() -> trio.abc.Stream:
                host, port = await stereo.address()  # the file's bind, listening
                assert host == "127.0.0.1"
                return await trio.open_tcp_stream(host, port)

            await serves(stereo, control, 2, connect)  # the environment's count, not the file's


async def test_pyproject_and_web_concurrency_need_no_arguments(tmp_path: Path) -> None:
    control = tmp_path / "ctl.sock"
    unix = tmp_path / "app.sock"
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.stereo]\napp = "pids:serve"\n'
        f"app-dir = {toml_path(APPS)}\nbind = {toml_path(f'unix:{unix}')}\n"
        f"control = {toml_path(control)}\n"
    )
    with trio.fail_after(60):
        async with open_stereo(cwd=tmp_path, env={"WEB_CONCURRENCY": "3"}) as stereo:
            await serves(stereo, control, 3, partial(trio.open_unix_socket, str(unix)))


async def test_print_config_shows_each_source_and_starts_nothing(tmp_path: Path) -> None:
    unix = tmp_path / "never.sock"
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.stereo]\napp = "pids:serve"\nbind = [{toml_path(f"unix:{unix}")}]\nworkers = 4\n'
    )
    code, out, err = await run_stereo(
        "--print-config", "--timeout", "9", cwd=tmp_path, env={"STEREO_MAX_WORKERS": "8"}
    )
    assert (code, err) == (0, "")
    rows = {
        match[1]: (match[2], match[3])
        for line in out.splitlines()
        if (match := re.match(r"^([a-z-]+) = (.*?)\s+# (.*)$", line))
    }
    shown = "file pyproject.toml [tool.stereo]"
    assert rows["app"] == ('"pids:serve"', shown)
    assert rows["bind"] == (f'["unix:{unix}"]', shown)
    assert rows["workers"] == ("4", shown)
    assert rows["max-workers"] == ("8", "environment STEREO_MAX_WORKERS")
    assert rows["timeout"] == ("9.0", "command line")
    assert rows["graceful-timeout"] == ("30.0", "default")
    assert not unix.exists()  # nothing was bound


async def test_bad_values_are_one_line_naming_their_source(tmp_path: Path) -> None:
    (tmp_path / "stereo.toml").write_text('app = "pids:serve"\nwokers = 2\n')
    cases = [
        (
            ("pids:serve",),
            {"STEREO_WORKERS": "abc"},
            "STEREO_WORKERS='abc' (environment): not a whole number",
        ),
        (
            ("-c", "stereo.toml"),
            {},
            "wokers (file stereo.toml): not an option of stereo run; did you mean workers?",
        ),
        (
            ("pids:serve", "--print-config"),
            {"WEB_CONCURRENCY": "5000"},
            "--workers 5000"
            " (environment WEB_CONCURRENCY): must be a whole number from 0 to 1024 (--max-workers)",
        ),
        (
            ("-c", "missing.toml", "pids:serve"),
            {},
            "missing.toml: cannot read the config file: No such file or directory",
        ),
    ]
    for args, env, line in cases:
        code, _, err = await run_stereo(*args, cwd=tmp_path, env=env)
        assert (code, err) == (2, f"stereo: {line}\n"), args
    code, _, err = await run_stereo(cwd=tmp_path)
    assert code == 2
    assert err.endswith(
        "error: the following arguments are required: MODULE:ATTR (or app in the config file, or"
        " $STEREO_APP)\n"
    )


async def test_a_misspelt_variable_is_a_warning_and_the_master_starts(tmp_path: Path) -> None:
    code, out, err = await run_stereo(
        "pids:serve", "--print-config", cwd=tmp_path, env={"STEREO_WOKERS": "2"}
    )
    assert code == 0 and "workers" in out
    assert err == (
        "stereo: warning: STEREO_WOKERS (environment): not an option of stereo run, ignored;"
        " did you mean STEREO_WORKERS?\n"
    )


APP = """import os

async def serve(worker):
    print("serving {name}", flush=True)
    await worker.stopping.wait()
"""


async def test_an_upgrade_reads_the_changed_config_file(tmp_path: Path) -> None:
    """SIGUSR2 starts the new master with the old one's argv and environment, and it reads the
    config file again: a bad edit fails the upgrade (the old master serves on), a good one is
    taken up, except the binds, which are inherited."""
    for name in ("one", "two"):
        (tmp_path / f"{name}.py").write_text(APP.format(name=name))
    config = tmp_path / "stereo.toml"
    control = tmp_path / "ctl.sock"
    unix, elsewhere = tmp_path / "app.sock", tmp_path / "not-ours.sock"
    elsewhere.write_text("another program's file")
    common = f"app-dir = {toml_path(tmp_path)}\ncontrol = {toml_path(control)}\nworkers = 2\n"
    config.write_text(f'app = "one:serve"\nbind = {toml_path(f"unix:{unix}")}\n{common}')
    new_master = None
    try:
        with trio.fail_after(90):
            async with open_stereo("-c", str(config), cwd=tmp_path) as stereo:
                await stereo.wait_for(r"^\[worker \d\] serving one$", count=2)
                config.write_text(f'app = "two:serve"\n{common}timeout = "soon"\n')
                mark = len(stereo.lines)
                stereo.signal(signal.SIGUSR2)
                await stereo.wait_for(r"upgrade failed: new master pid \d+ ended", start=mark)
                assert (
                    'stereo: timeout = "soon" (file ' + str(config) + "): not a number of seconds"
                ) in stereo.lines[mark:]
                assert len(await status(control)) == 2  # the old master serves on

                # A changed bind does not apply (the sockets are inherited), and the file at the
                # new path is not the new master's to remove.
                config.write_text(
                    f'app = "two:serve"\nbind = {toml_path(f"unix:{elsewhere}")}\n{common}'
                )
                mark = len(stereo.lines)
                stereo.signal(signal.SIGUSR2)
                (started,) = await stereo.wait_for(r"started new master pid (\d+)", start=mark)
                new_master = int(started[1])
                await stereo.wait_for(r"^\[worker \d\] serving two$", count=2, start=mark)
                await stereo.wait_for(r"new master pid \d+ is serving", start=mark)
                # The old master handed over and left (its stdout is the new master's too: no EOF).
                assert await stereo.process.wait() == 0
                assert len(await status(control)) == 2
                stream = await trio.open_unix_socket(str(unix))  # still served
                await stream.aclose()
                os.kill(new_master, signal.SIGTERM)
                await wait_exited(new_master)
                new_master = None
        assert elsewhere.read_text() == "another program's file"
    finally:
        if new_master is not None:
            os.kill(new_master, signal.SIGKILL)
