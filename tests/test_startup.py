"""First steps that went wrong: an app that cannot boot at start-up ends `stereo run` with its
reason, told once (exit 3) instead of a master holding the port with no worker; a target without a
colon is refused before anything is bound; `trio.serve_listeners` without --bind is a boot error
that says so, not a crash loop. What must not change: -w 0 and socket-less apps start, and a boot
error after start-up fails only its slot (the master serves on).

The real `stereo run` and its workers throughout, except for the pure rules (BootReports) and the
recognition of trio's own assertion, which a real `trio.serve_listeners` call raises here.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from conftest import Stereo, ctl, open_stereo, stereo_command
from test_faults import started

from stereo import exitcodes
from stereo.errors import AppStartError
from stereo.master.startup import BootReports, tell_once
from stereo.worker.runtime import run_serve

NO_LISTENERS = (
    "trio.serve_listeners() was called but this worker has no listening socket: give `stereo run`"
    " a --bind (HOST:PORT, unix:PATH or fd://N)"
)


async def run_to_exit(*args: str) -> tuple[int, list[str]]:
    """Run `stereo run ARGS` to its end: its exit status and every line it printed (stdout and
    stderr, merged as a terminal shows them)."""
    async with open_stereo(*args) as stereo:
        with trio.fail_after(90):
            code = await stereo.wait()
        return code, stereo.lines


def count(lines: list[str], text: str) -> int:
    return sum(line.count(text) for line in lines)


@asynccontextmanager
async def serving_until_a_bad_deploy(
    tmp_path: Path, workers: int
) -> AsyncIterator[tuple[Stereo, Path]]:
    """`breakable:serve` on a TCP port, and the file whose creation breaks its next import."""
    marker = tmp_path / "broken"
    args = ("breakable:serve", "-w", str(workers), "--bind", "127.0.0.1:0")
    async with open_stereo(*args, env={"BREAK_MARKER": str(marker)}) as stereo:
        yield stereo, marker


# -- at start-up, an app that cannot boot ends `stereo run` -----------------------------------


def _syntax_error(app_dir: Path) -> tuple[str, str]:
    (app_dir / "typo.py").write_text("async def serve(worker)\n    pass\n")
    return "typo:serve", "cannot import 'typo': SyntaxError: expected ':' (typo.py, line 1)"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("nosuch:serve", "cannot import 'nosuch': ModuleNotFoundError: No module named 'nosuch'"),
        ("listen_only:nosuch", "module 'listen_only' has no attribute 'nosuch'"),
        ("broken_import:serve", "RuntimeError: simulated import-time failure"),
        (None, None),  # a syntax error, written in tmp_path (a broken file among the apps would
        # break the linters)
    ],
    ids=["no-module", "no-attribute", "raises-at-import", "syntax-error"],
)
async def test_an_app_that_cannot_load_at_start_ends_stereo_run_with_its_reason_once(
    tmp_path: Path, target: str | None, reason: str | None
) -> None:
    app_dir = ("--app-dir", str(Path(__file__).parent / "apps"))
    if target is None:
        target, reason = _syntax_error(tmp_path)
        app_dir = ("--app-dir", str(tmp_path))
    assert reason is not None
    sock = tmp_path / "http.sock"
    code, lines = await run_to_exit(
        target, "-w", "4", *app_dir, "--bind", f"unix:{sock}", "--control", str(tmp_path / "c")
    )
    assert code == exitcodes.RUN_APP_BOOT_FAILED == 3
    # Once, on the last line (stderr), whatever the number of workers that met it.
    assert count(lines, reason) == 1, lines
    assert re.fullmatch(rf"stereo: the app cannot start: .*{re.escape(reason)}", lines[-1])
    failed = r"^\[stereo\] worker \d failed at start-up: exit 4 \(app load error\)$"
    assert sum(bool(re.match(failed, line)) for line in lines) == 1, lines
    assert "[stereo] the app cannot boot at start-up: stopping" in lines
    assert not any("restarting" in line for line in lines)
    assert not sock.exists()  # the port is given back: clients are refused, not left hanging


async def test_serve_listeners_without_bind_is_a_boot_error_that_names_the_missing_bind(
    tmp_path: Path,
) -> None:
    code, lines = await run_to_exit(
        "listen_only:serve", "-w", "4", "--control", str(tmp_path / "c")
    )
    assert code == exitcodes.RUN_APP_BOOT_FAILED
    assert lines[-1] == f"stereo: the app cannot start: {NO_LISTENERS}"
    assert count(lines, "no listening socket") == 1, lines
    # trio's own words are not what the user reads, and nothing was restarted.
    assert not any("AssertionError" in line or "should never complete" in line for line in lines)
    assert not any("restarting" in line for line in lines)


async def test_a_target_without_a_colon_is_refused_before_anything_is_bound(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "http.sock"
    with trio.fail_after(60):
        result = await trio.run_process(
            stereo_command("run", "chat", "--bind", f"unix:{sock}", "--control", str(tmp_path)),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        "stereo: app 'chat' is not MODULE:ATTR (the module to import, then the app in it): e.g."
        " 'chat:serve' for an async serve(worker), 'chat:app' for an ASGI app"
    ]
    assert os.listdir(tmp_path) == []  # neither the bind's socket nor the control socket


# -- what keeps working: -w 0, socket-less apps, failures after start-up ----------------------


async def test_w_0_starts_and_a_boot_error_of_an_added_worker_fails_only_its_slot(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control.sock")
    with trio.fail_after(90):
        async with open_stereo("nosuch:serve", "-w", "0", "--control", control) as stereo:
            await stereo.wait_for(r"^\[stereo\] control socket: ")
            # An operator's add is no longer the start-up: the master stays up, the slot fails.
            assert (await ctl("--control", control, "add", "2"))[0] == 0
            first, second = await stereo.wait_for(
                r"^\[stereo\] worker (\d) failed: exit 4 \(app load error\)(.*); not restarting",
                count=2,
            )
            # The second worker's same reason is told by reference, not again.
            assert first[2] == (
                ": cannot import 'nosuch': ModuleNotFoundError: No module named 'nosuch'"
            )
            assert second[2] == f", as worker {first[1]}"
            assert count(stereo.lines, "No module named") == 1
            code, out, _ = await ctl("--control", control, "status")
            assert code == 0 and out.count("failed") >= 2, out
            assert stereo.process.returncode is None
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_a_socketless_app_without_bind_starts_and_serves_on(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    with trio.fail_after(90):
        async with open_stereo("control_app:serve", "-w", "2", "--control", control) as stereo:
            await stereo.wait_for(r"^\[worker \d\] ready$", count=2)
            assert (await ctl("--control", control, "broadcast", '"hello"'))[0] == 0
            await stereo.wait_for(r'^\[worker \d\] received "hello" from 0$', count=2)
            assert not any("failed" in line for line in stereo.lines)
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


async def test_after_start_up_boot_errors_fail_their_slots_once_and_the_master_serves_on(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        async with serving_until_a_bad_deploy(tmp_path, 2) as (st, marker):
            pids = await started(st, 2)
            # A worker that answers a client has run the app (its READY reached the master).
            stream = await trio.open_tcp_stream(*await st.address())
            answered = int((await stream.receive_some()).split()[1])
            await stream.aclose()
            marker.touch()  # a bad deploy: the next import of the app fails
            for slot in (answered, 3 - answered):  # both respawns meet it
                os.kill(pids[slot], signal.SIGKILL)
                await st.wait_for(
                    rf"^\[stereo\] worker {slot} \(pid \d+\) exited: killed by SIGKILL"
                )
            await st.wait_for(r"^\[stereo\] worker \d failed: .*; not restarting", count=2)
            reason = "cannot import 'breakable': ImportError: simulated bad deploy"
            assert count(st.lines, reason) == 1, st.lines
            assert any(
                re.search(r"failed: exit 4 \(app load error\), as worker \d;", line)
                for line in st.lines
            )
            assert st.process.returncode is None  # the app had come up: the master stays
            st.signal(signal.SIGTERM)
            assert await st.wait() == 0


async def test_a_sighup_onto_a_bad_deploy_tells_the_reason_once_and_the_old_worker_serves_on(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        async with serving_until_a_bad_deploy(tmp_path, 1) as (st, marker):
            host, port = await st.address()
            await started(st, 1)
            marker.touch()
            st.signal(signal.SIGHUP)
            await st.wait_for(
                r"^\[stereo\] restart of worker 1: the new process ended: exit 4 \(app load"
                r" error\): cannot import 'breakable': ImportError: simulated bad deploy"
            )
            assert count(st.lines, "simulated bad deploy") == 1, st.lines
            stream = await trio.open_tcp_stream(host, port)  # the old worker still answers
            assert await stream.receive_some() == b"worker 1\n"
            await stream.aclose()
            assert st.process.returncode is None
            st.signal(signal.SIGTERM)
            assert await st.wait() == 0


async def test_with_reload_an_app_broken_at_start_waits_for_the_save_that_fixes_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text("import no_such_module_here\n")
    args = ("app:serve", "-w", "1", "--app-dir", str(tmp_path), "--reload")
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with trio.fail_after(90):
        async with open_stereo(*args, "--control", str(tmp_path / "c"), env=env) as st:
            await st.wait_for(
                r"^\[stereo\] worker 1 failed: .*no_such_module_here.*; not restarting"
            )
            await st.wait_for(r"^\[stereo\] reload: watching ")
            (tmp_path / "app.py").write_text(
                "async def serve(worker):\n    print('fixed', flush=True)\n"
                "    await worker.stopping.wait()\n"
            )
            await st.wait_for(r"^\[worker 1\] fixed$")
            st.signal(signal.SIGTERM)
            assert await st.wait() == 0


# -- the pure parts ---------------------------------------------------------------------------


class Proc:
    def __init__(self, returncode: int | None, ready_at: float | None, said: str | None = None):
        self.returncode = returncode
        self.ready_at = ready_at
        self.boot_error_reason = said
        status = exitcodes.describe(returncode or 0)
        self.exit_reason = f"{status}: {said}" if said else status


class Slot:
    def __init__(self, slot_id: int, failed_reason: str | None) -> None:
        self.id = slot_id
        self.failed_reason = failed_reason


LOAD = exitcodes.APP_LOAD_ERROR


def test_the_first_boot_error_at_start_up_is_the_apps_failure() -> None:
    boot = BootReports(settle=2.0)
    # A kill before the app ever ran proves nothing either way.
    assert not boot.exited(1.0, Proc(-9, None), [])
    assert boot.exited(1.5, Proc(LOAD, None, "cannot import 'x'"), [Proc(None, None)])
    assert boot.failure == "cannot import 'x'"
    assert not boot.exited(1.6, Proc(LOAD, None, "cannot import 'x'"), [])  # once
    # An app's own exit 4 without a word: its status is the reason.
    boot = BootReports(settle=2.0)
    assert boot.exited(0.5, Proc(LOAD, None), [])
    assert boot.failure == "exit 4 (app load error)"


def test_ready_a_moment_before_a_boot_error_is_not_having_run() -> None:
    # serve() says READY, then finds no listener: still the start-up, for it and the others.
    boot = BootReports(settle=2.0)
    others = [Proc(None, 0.6), Proc(None, 0.7)]
    assert boot.exited(1.0, Proc(LOAD, 0.5, "no listening socket"), others)


@pytest.mark.parametrize(
    ("ended", "others"),
    [
        (Proc(1, 0.5), []),  # a ready worker crashed: the app had run
        (Proc(0, 0.5), []),  # ... or was drained
        (Proc(LOAD, 0.5), []),  # ready for 2 s, then a boot error (the app's own exit 4)
        (Proc(-9, None), [Proc(None, 0.5)]),  # another has been ready for 2 s
    ],
)
def test_start_up_ends_once_the_app_has_run(ended: Proc, others: list[Proc]) -> None:
    boot = BootReports(settle=2.0)
    assert not boot.exited(2.5, ended, others)
    assert not boot.exited(2.6, Proc(LOAD, None, "cannot import 'x'"), [])
    assert boot.failure is None


def test_a_load_error_while_another_worker_loaded_the_app_fails_its_slot_only() -> None:
    boot = BootReports(settle=2.0)
    assert not boot.exited(1.0, Proc(LOAD, None, "cannot import 'x'"), [Proc(None, 0.5)])
    assert boot.starting and boot.failure is None  # still the start-up: judged again next time
    assert boot.exited(1.2, Proc(LOAD, None, "cannot import 'x'"), [Proc(None, None)])


def test_an_operators_act_ends_the_start_up() -> None:
    boot = BootReports(settle=2.0)
    boot.operator_acted()
    assert not boot.exited(0.1, Proc(LOAD, None, "cannot import 'x'"), [])
    assert boot.failure is None


def test_a_reason_is_told_once_while_a_slot_is_failed_for_it() -> None:
    proc = Proc(LOAD, None, "cannot import 'x'")
    full = "exit 4 (app load error): cannot import 'x'"
    then = "; not restarting (fix it, then `restart`)"
    assert tell_once(2, proc, [Slot(1, None), Slot(2, full)], False) == full + then
    failed = [Slot(3, full), Slot(1, full), Slot(2, full)]
    assert tell_once(2, proc, failed, False) == f"exit 4 (app load error), as worker 1{then}"
    assert tell_once(2, proc, [Slot(1, "exit 4 (app load error): other")], False) == full + then
    assert tell_once(2, proc, failed, True) == "exit 4 (app load error), as worker 1"  # stopping
    # A bare status is shorter than a reference: each slot tells it.
    crashed = Proc(1, 0.1)
    slots = [Slot(1, "exit 1 (app crashed)")]
    assert tell_once(2, crashed, slots, False) == f"exit 1 (app crashed){then}"


async def test_only_trios_own_assertion_in_serve_listeners_is_taken_for_a_missing_bind() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        raise AssertionError("not reached")

    async def serves(worker: Any) -> None:
        await trio.serve_listeners(handler, worker.listeners)

    async def asserts(worker: Any) -> None:
        assert worker.listeners, "the app's own assertion"

    async def both(worker: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serves, worker)
            nursery.start_soon(asserts, worker)

    no_bind = SimpleNamespace(listeners=[])
    for app in (serves, both):
        with pytest.raises(AppStartError, match="no listening socket: give `stereo run` a --bind"):
            await run_serve(app, no_bind)  # type: ignore[arg-type]
    # Any other assertion is the app's crash, and leaves as it came (not wrapped in a group).
    with pytest.raises(AssertionError, match="the app's own assertion"):
        await run_serve(asserts, no_bind)  # type: ignore[arg-type]
