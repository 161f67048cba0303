"""Every shell command of README.md and docs/*.md runs as written (the convention and what the test
substitutes are in tests/doccommands.py): one shell per page, from (a view of) the checkout's root,
masters started in the background, awaited, and stopped with SIGTERM.

A failure names the page, the line and the command as written (and as run, when a substitution
changed it), with its output and the output of the master it ran against.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import trio
from conftest import ROOT, wait_exited
from doccommands import (
    CONTROL_DISABLED,
    CONTROL_READY,
    LISTENING,
    SHELL_LANGUAGES,
    WORKER_READY,
    Block,
    Command,
    free_ports,
    prepare,
    read_blocks,
    split_master,
    with_ports,
)

from stereo.control.client import ControlClient
from stereo.errors import ControlError

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Blocks marked `skip:` stay few: each is a command nobody can check here.
MOST_NOT_RUN = 8
# Tools a doc may use that a test machine may lack: the page is then skipped, and says why.
OPTIONAL_TOOLS = {"curl", "jq", "nc", "socat"}

COMMAND_TIMEOUT = 60  # one command (a dry-run pip install builds metadata: seconds)
READY_TIMEOUT = 60  # a master's workers, on a loaded machine
STOP_TIMEOUT = 45  # SIGTERM to exit (--graceful-timeout is 30 s)


def page_name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page_name(page), page.read_text())]


RUNNABLE_PAGES = sorted({block.page for block in all_blocks() if block.runs})
NOT_RUN = [block for block in all_blocks() if block.language in SHELL_LANGUAGES and block.skip]


class DocCommandFailed(AssertionError):
    pass


class ShellSilent(Exception):
    """The page's shell gave no status: it exited (a syntax error, an ``exit``) or timed out."""


@dataclass
class Master:
    command: Command
    pid: int
    ports: dict[int, int]
    output_start: int
    exited: bool = False


@dataclass
class Terminal:
    """One shell for one page: commands go in on stdin; each one's status comes back on
    stdout after a random marker; its own output goes to files, a master's to ``self.output``."""

    process: trio.Process
    tmp: Path
    output_fd: int  # the write end, in the shell, that masters write to
    marker: str = field(default_factory=lambda: f"__doc_{secrets.token_hex(8)}__")
    output: list[str] = field(default_factory=list)
    _statuses: list[str] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)
    master: Master | None = None
    ran: int = 0
    nursery: trio.Nursery | None = None

    async def _watch(self, master: Master) -> None:
        await wait_exited(master.pid)
        master.exited = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read_statuses(self) -> None:
        assert self.process.stdout is not None
        partial = b""
        while chunk := await self.process.stdout.receive_some():
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                if line.startswith(self.marker.encode()):
                    self._statuses.append(line.decode().split(" ", 1)[1])
            self._notify()
        self._statuses.append("EOF")
        self._notify()

    async def read_output(self, stream: trio.lowlevel.FdStream) -> None:
        partial = b""
        while chunk := await stream.receive_some():
            *lines, partial = (partial + chunk).split(b"\n")
            self.output.extend(line.decode(errors="replace") for line in lines)
            self._notify()
        if partial:
            self.output.append(partial.decode(errors="replace"))
        self._notify()

    async def _send(self, script: str, within: float = COMMAND_TIMEOUT) -> str:
        """Run ``script`` in the shell; what it printed after the marker."""
        assert self.process.stdin is not None
        seen = len(self._statuses)
        await self.process.stdin.send_all(script.encode())
        with trio.move_on_after(within):
            while len(self._statuses) == seen:
                await self._changed.wait()
        if len(self._statuses) == seen:
            raise ShellSilent(f"ran over {within:g} s")
        status = self._statuses[seen]
        if status == "EOF":
            said = (self.tmp / "shell.err").read_text(errors="replace")[-2000:]
            raise ShellSilent(f"ended the page's shell (a syntax error, an exit?):\n{said}")
        return status

    def master_output(self, start: int = 0) -> str:
        return "\n".join(self.output[start:][-40:])

    def failure(self, command: Command, ran: str, problem: str, detail: str = "") -> str:
        lines = [f"{command.where}: `{command.text}` {problem}"]
        if ran != command.text:
            lines.append(f"  ran as: {ran}")
        if detail:
            lines.append(detail)
        if self.master is not None:
            lines.append(f"---- output of the master started at {self.master.command.where} ----")
            lines.append(self.master_output(self.master.output_start))
        return "\n".join(lines)

    async def run(self, command: Command, text: str) -> None:
        prepared = prepare(text)
        ran = prepared.text
        if self.master is not None:
            ran = with_ports(ran, self.master.ports)
        self.ran += 1
        out, err = self.tmp / f"{self.ran}.out", self.tmp / f"{self.ran}.err"
        try:
            status = await self._send(
                f"{{ {ran}\n}} </dev/null >{out} 2>{err}\nprintf '\\n%s %d\\n' {self.marker} $?\n"
            )
        except ShellSilent as exc:
            raise DocCommandFailed(self.failure(command, ran, str(exc))) from None
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        detail = f"---- stdout ----\n{stdout[-3000:]}---- stderr ----\n{stderr[-3000:]}"
        missing = re.search(r"(\S+): command not found", stderr)
        if status == "127" and missing and missing[1] in OPTIONAL_TOOLS:
            pytest.skip(f"{command.where}: {missing[1]} is not installed here")
        if status != "0":
            raise DocCommandFailed(self.failure(command, ran, f"exited {status}", detail))
        if prepared.pip and re.search(r"^(WARNING|ERROR):", stderr, re.M):
            raise DocCommandFailed(self.failure(command, ran, "warned", detail))

    async def start_master(self, command: Command, setup: str, master: str) -> None:
        await self.stop_master()
        if setup:
            await self.run(command, setup)
        master, written = free_ports(master)
        ran = prepare(master).text
        start = len(self.output)
        background = f"{ran} </dev/null >&{self.output_fd} 2>&1 &"
        try:
            pid = int(await self._send(f"{background}\nprintf '\\n%s %d\\n' {self.marker} $!\n"))
        except ShellSilent as exc:
            raise DocCommandFailed(self.failure(command, ran, str(exc))) from None
        if pid <= 0:  # nothing started; never signal pid 0 (our own process group)
            raise DocCommandFailed(self.failure(command, ran, "started no process"))
        self.master = Master(command, pid, {}, start)
        assert self.nursery is not None
        self.nursery.start_soon(self._watch, self.master)
        path = await self._wait_control_socket(command, ran, start)
        if path is None:  # it ended by itself: an ordinary command
            self.master = None
            try:
                status = await self._send(f"wait {pid}\nprintf '\\n%s %d\\n' {self.marker} $?\n")
            except ShellSilent as exc:
                raise DocCommandFailed(self.failure(command, ran, str(exc))) from None
            if status != "0":
                detail = "---- its output ----\n" + self.master_output(start)
                raise DocCommandFailed(self.failure(command, ran, f"exited {status}", detail))
            return
        listening = [
            int(m["port"]) for line in self.output[start:] if (m := LISTENING.search(line))
        ]
        self.master.ports = dict(zip(written, listening, strict=False))
        await self._wait_workers_ready(command, ran, path)

    async def _wait_control_socket(self, command: Command, ran: str, start: int) -> str | None:
        """The control socket's path once the master listens on it; None if it exited first."""
        assert self.master is not None
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                for line in self.output[start:]:
                    if CONTROL_DISABLED.search(line):
                        raise DocCommandFailed(self.failure(command, ran, "has no control socket"))
                    if ready := CONTROL_READY.search(line):
                        return ready["path"]
                if self.master.exited:
                    return None
                await self._changed.wait()
        raise DocCommandFailed(self.failure(command, ran, "opened no control socket"))

    async def _wait_workers_ready(self, command: Command, ran: str, path: str) -> None:
        """Every slot the master has once its worker says so (the master's "worker N (pid P)
        ready" line), then no slot lost a process meanwhile."""
        rows = await self._status(command, ran, path)
        waiting = {int(str(row["slot"])) for row in rows}
        with trio.move_on_after(READY_TIMEOUT):
            while waiting:
                waiting -= {int(m[1]) for line in self.output if (m := WORKER_READY.search(line))}
                if waiting:
                    await self._changed.wait()
        if waiting:
            raise DocCommandFailed(self.failure(command, ran, f"workers never ready: {waiting}"))
        rows = await self._status(command, ran, path)
        if failed := [row for row in rows if row["restarts"] or row["last_exit"]]:
            problem = f"lost workers: {[(r['slot'], r['last_exit']) for r in failed]}"
            raise DocCommandFailed(self.failure(command, ran, problem))

    async def _status(self, command: Command, ran: str, path: str) -> list[dict[str, object]]:
        try:
            return await trio.to_thread.run_sync(_status, path)
        except ControlError as exc:
            problem = f"stopped answering: {exc}"
            raise DocCommandFailed(self.failure(command, ran, problem)) from None

    async def stop_master(self) -> None:
        if self.master is None:
            return
        master, self.master = self.master, None
        try:
            os.kill(master.pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended already: the shell has its status
            pass
        what = f"{master.command.where}: `{master.command.text}`"
        try:
            status = await self._send(
                f"wait {master.pid}\nprintf '\\n%s %d\\n' {self.marker} $?\n", STOP_TIMEOUT
            )
        except ShellSilent as exc:
            raise DocCommandFailed(
                f"{what}, sent SIGTERM, {exc}\n" + self.master_output(master.output_start)
            ) from None
        if status != "0":
            raise DocCommandFailed(
                f"{what} exited {status} on SIGTERM\n" + self.master_output(master.output_start)
            )


def _status(path: str) -> list[dict[str, object]]:
    with ControlClient.connect(path, request_timeout=10) as client:
        rows: list[dict[str, object]] = client.request("status")
        return rows


def new_terminal_env(tmp: Path) -> dict[str, str]:
    """A new terminal's: nothing puts ``stereo`` on PATH but the docs' own commands."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    path = [
        d for d in env.get("PATH", "").split(os.pathsep) if d and not Path(d, "stereo").exists()
    ]
    env.update(
        PATH=os.pathsep.join(path),
        STEREO_CONTROL=str(tmp / "control" / "stereo.sock"),  # private: collides with nothing
        XDG_STATE_HOME=str(tmp / "state"),  # the console's history
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def checkout_view(tmp: Path) -> Path:
    """A directory that looks like the checkout's root (a symbolic link to each of its entries),
    so that files a doc's commands create (a config, a pid file, a log) land in ``tmp``; its
    ``.venv`` is the venv running the tests."""
    view = tmp / "checkout"
    view.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (view / entry.name).symlink_to(entry)
    (view / ".venv").symlink_to(sys.prefix)
    return view


def kill_tree(pid: int) -> None:
    """Whatever a page left running (its masters and their workers), then its shell."""
    try:
        shell = psutil.Process(pid)
        processes = [*shell.children(recursive=True), shell]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@asynccontextmanager
async def open_terminal(tmp: Path) -> AsyncIterator[Terminal]:
    read_end, write_end = os.pipe()
    with (tmp / "shell.err").open("wb") as shell_errors:
        process = await trio.lowlevel.open_process(
            ["bash", "--noprofile", "--norc", "-o", "pipefail"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=shell_errors,
            cwd=checkout_view(tmp),
            env=new_terminal_env(tmp),
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    terminal = Terminal(process, tmp, write_end)
    output = trio.lowlevel.FdStream(read_end)
    try:
        async with trio.open_nursery() as nursery:
            terminal.nursery = nursery
            nursery.start_soon(terminal.read_statuses)
            nursery.start_soon(terminal.read_output, output)
            try:
                yield terminal
            finally:
                kill_tree(process.pid)
                with trio.move_on_after(10):
                    await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        await output.aclose()
        if process.stdin is not None:
            await process.stdin.aclose()
        if process.stdout is not None:
            await process.stdout.aclose()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
async def test_the_commands_of_the_page_run(page: str, tmp_path: Path) -> None:
    (tmp_path / "control").mkdir(mode=0o700)
    blocks = [block for block in read_blocks(page, (ROOT / page).read_text()) if block.runs]
    # Raised out of the terminal's nursery, a failure would come wrapped in an ExceptionGroup.
    failure: BaseException | None = None
    async with open_terminal(tmp_path) as terminal:
        try:
            for block in blocks:
                for command in block.commands():
                    if (master := split_master(command.text)) is not None:
                        await terminal.start_master(command, *master)
                    else:
                        await terminal.run(command, command.text)
            await terminal.stop_master()
        except (DocCommandFailed, pytest.skip.Exception) as exc:
            failure = exc
    if failure is not None:
        raise failure


@pytest.mark.parametrize("block", NOT_RUN, ids=[block.where for block in NOT_RUN])
def test_blocks_marked_not_to_run(block: Block) -> None:
    """Listed (with ``-ra``) as skipped, with the reason the doc gives."""
    pytest.skip(f"{block.where} is not run: {block.skip}")


def test_few_blocks_are_not_run() -> None:
    assert len(NOT_RUN) <= MOST_NOT_RUN, "\n".join(f"{b.where}: {b.skip}" for b in NOT_RUN)


def test_commands_are_in_shell_blocks() -> None:
    """A ``$ command`` elsewhere would never run: write it in a ``sh`` block without the ``$``
    (or mark the block ``skip:`` with a reason)."""
    prompts = [
        f"{block.page}:{line}"
        for block in all_blocks()
        if block.skip is None
        for line in block.prompt_lines()
    ]
    assert prompts == []


def test_the_docs_show_the_examples_as_they_are() -> None:
    """A ``python`` block that starts with ``# examples/NAME.py`` is that file, whole: the
    commands that run it then run the code the page shows."""
    shown = [
        block
        for block in all_blocks()
        if block.language == "python" and block.body and block.body[0].startswith("# examples/")
    ]
    assert shown, "quickstart.md shows examples/hello.py"
    for block in shown:
        path = ROOT / block.body[0].removeprefix("# ").strip()
        assert path.read_text() == "\n".join(block.body) + "\n", f"{block.where} is not {path}"
