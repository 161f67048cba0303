"""--reload: which changed files count (ReloadFilter, pure), then the real thing: a master watching
a temporary app directory restarts its workers on a save, survives a save that breaks the import
(first start good, then broken: the master stays up and says so once), and the next good save
brings every worker back, a worker that died meanwhile included."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import trio
from conftest import open_stereo, stereo_command, wait_exited

from stereo.master.reload import ReloadFilter, describe_changes

ROOT = Path("/srv/app")


def default_filter(include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> ReloadFilter:
    return ReloadFilter.from_options([str(ROOT)], include, exclude)


@pytest.mark.parametrize(
    "path, wanted",
    [
        ("app.py", True),
        ("pkg/sub/mod.py", True),
        ("README.md", False),  # not *.py
        (".hidden.py", False),  # hidden file
        (".venv/lib/site.py", False),  # under a hidden directory: never watched for
        (".git/hooks/x.py", False),
        ("~backup.py", False),
        ("app.pyc", False),
    ],
)
def test_the_defaults_are_uvicorns(path: str, wanted: bool) -> None:
    assert default_filter().wants(str(ROOT / path)) is wanted


def test_paths_outside_the_watched_roots_never_count() -> None:
    assert not default_filter().wants("/srv/other/app.py")
    assert not default_filter().wants(str(ROOT))


def test_includes_and_excludes_add_to_the_defaults() -> None:
    flt = default_filter(include=("*.html", "conf/*.toml"), exclude=("build", "*_test.py"))
    assert flt.wants(str(ROOT / "templates/index.html"))
    assert flt.wants(str(ROOT / "conf/app.toml"))
    assert not flt.wants(str(ROOT / "app.toml"))  # a pattern with / is matched from the right
    assert not flt.wants(str(ROOT / "build/gen.py"))  # an excluded directory, whole
    assert not flt.wants(str(ROOT / "pkg/a_test.py"))
    assert flt.wants(str(ROOT / "pkg/a.py"))


def test_what_the_user_names_beats_the_defaults() -> None:
    dotenv = default_filter(include=(".env",))
    assert dotenv.wants(str(ROOT / ".env"))  # named: the default .* does not hide it
    assert not dotenv.wants(str(ROOT / ".venv/.env"))  # but hidden directories stay out
    assert not default_filter(include=(".env",), exclude=(".env",)).wants(str(ROOT / ".env"))
    assert ".*" not in default_filter(include=(".*",)).exclude
    no_py = default_filter(include=("*.pyx",), exclude=("*.py",))
    assert no_py.include == ("*.pyx",)
    assert not no_py.wants(str(ROOT / "app.py")) and no_py.wants(str(ROOT / "fast.pyx"))


def test_the_log_names_a_few_changed_files() -> None:
    flt = default_filter()
    paths = [str(ROOT / name) for name in ("b.py", "a.py", "c.py", "d.py", "e.py")]
    assert describe_changes(paths, flt) == "a.py, b.py, c.py and 2 more"
    assert describe_changes([str(ROOT / "pkg/x.py")], flt) == "pkg/x.py"


# -- end to end -----------------------------------------------------------------------------------

APP = """\
import os
import trio

VERSION = {version!r}


async def serve(worker):
    print(f"version {{VERSION}} pid {{os.getpid()}}", flush=True)
    await trio.sleep_forever()
"""
STARTED = r"^\[worker (\d+)\] version (\w+) pid (\d+)$"
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # a rewritten module must never meet a stale .pyc


def save(app_dir: Path, text: str) -> None:
    """Write the module as an editor does: the whole file, in place."""
    (app_dir / "app.py").write_text(text)


def import_errors(lines: list[str]) -> list[str]:
    """Reports of an app that cannot be imported (the master's: a worker does not repeat them)."""
    return [line for line in lines if "cannot import" in line]


def versions_since(lines: list[str], start: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for line in lines[start:]:
        if match := re.match(STARTED, line):
            found[int(match[1])] = match[2]
    return found


async def test_a_save_restarts_every_worker_and_a_broken_save_keeps_the_master_up(
    tmp_path: Path,
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    save(app_dir, APP.format(version="one"))
    args = (
        "app:serve",
        "-w",
        "2",
        "--app-dir",
        str(app_dir),
        "--reload",
        "--control",
        str(tmp_path / "control" / "stereo.sock"),
        "--graceful-timeout",
        "5",
    )
    with trio.fail_after(120):
        async with open_stereo(*args, env=ENV) as stereo:
            await stereo.wait_for(STARTED, count=2)
            await stereo.wait_for(r"^\[stereo\] reload: watching .*app \(\*\.py\)$")

            # A good save: each worker replaced by one running the new code, one at a time.
            mark = len(stereo.lines)
            save(app_dir, APP.format(version="two"))
            await stereo.wait_for(r"^\[stereo\] reload: app\.py changed; restarting workers$")
            await stereo.wait_for(r"^\[worker \d+\] version two ", count=2, start=mark)
            assert versions_since(stereo.lines, mark) == {1: "two", 2: "two"}

            # A save that breaks the import: the master stays up, says so once, and the
            # workers keep running the code they have.
            mark = len(stereo.lines)
            save(app_dir, APP.format(version="three") + "\ndef broken(:\n")
            await stereo.wait_for(r"reload: the new code did not start in worker 1", start=mark)
            await stereo.wait_for(
                r"^\[stereo\] restart of worker 1: the new process ended: exit 4 \(app load"
                r" error\): cannot import 'app': SyntaxError: ",
                start=mark,
            )
            errors = import_errors(stereo.lines[mark:])
            assert len(errors) == 1, stereo.lines[mark:]
            assert stereo.process.returncode is None
            restarting = [line for line in stereo.lines[mark:] if "restarting workers" in line]
            assert len(restarting) == 1

            # Workers that die while the code is broken cannot come back: their slots fail.
            pids = {int(m[1]): int(m[3]) for m in map(re.compile(STARTED).match, stereo.lines) if m}
            for slot in (1, 2):
                os.kill(pids[slot], signal.SIGKILL)
                await wait_exited(pids[slot])
                await stereo.wait_for(
                    rf"^\[stereo\] worker {slot} failed: .*app load error", start=mark
                )

            # Another broken save with every worker down: one slot tries it, alone, once.
            mark = len(stereo.lines)
            save(app_dir, APP.format(version="three") + "\nimport no_such_module_here\n")
            await stereo.wait_for(r"reload: the new code did not start in worker 1", start=mark)
            await stereo.wait_for(r"^\[stereo\] worker 1 failed: .*app load error", start=mark)
            errors = import_errors(stereo.lines[mark:])
            assert len(errors) == 1, stereo.lines[mark:]
            assert "no_such_module_here" in errors[0]

            # The next good save brings every worker back on the new code, the failed ones
            # too, without waiting out a backoff.
            mark = len(stereo.lines)
            save(app_dir, APP.format(version="four"))
            await stereo.wait_for(r"^\[worker \d+\] version four ", count=2, start=mark)
            assert versions_since(stereo.lines, mark) == {1: "four", 2: "four"}
            assert not any("did not start" in line for line in stereo.lines[mark:])

            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_a_reload_dir_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    result = await trio.run_process(
        stereo_command(
            "run", "app:serve", "--reload", "--reload-dir", str(tmp_path / "nosuch"), "--no-console"
        ),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        result.stderr.decode().strip() == f"stereo: --reload-dir {tmp_path}/nosuch: not a directory"
    )
