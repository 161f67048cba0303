"""The interactive console (prompt_toolkit): ``stereo console`` from another terminal, or in place
in the terminal of ``stereo run`` with worker output printed above the prompt.

The console only parses lines and renders results; every command runs in the master through the
control protocol (:mod:`stereo.control.server`), in place too: there it talks over a socketpair the
master serves like any control connection. Leaving the console (``quit``, Ctrl-D) never stops the
master. Errors are printed as one readable line, never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from ..errors import ControlError
from .client import ControlClient, ControlUnreachable
from .follow import LogFollower
from .render import format_help, format_result
from .syntax import ALIASES, COMMANDS, UsageError, parse_line
from .terminal import TerminalWriter
from .top import run_top_async

PROMPT = "stereo> "
#: How long the master, on its way out, waits for the prompt to end and the terminal to be free.
CLOSE_TIMEOUT = 3.0
SIGNAL_NAMES = ("TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2", "STOP", "CONT")


def history_path(environ: dict[str, str] | None = None) -> str:
    """``$XDG_STATE_HOME/stereo/console_history``, by default under ``~/.local/state``."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "stereo", "console_history")


def open_history(path: str | None = None) -> History:
    path = path or history_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError:
        return InMemoryHistory()  # a read-only home must not stop the console
    return FileHistory(path)


class ConsoleCompleter(Completer):
    """Command names first; then worker ids, signal names or modes, depending on the command."""

    def __init__(self, worker_ids: Callable[[], list[int]]) -> None:
        self.worker_ids = worker_ids

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        if not words or (len(words) == 1 and not text.endswith(" ")):
            prefix = words[0] if words else ""
            for name in [*COMMANDS, *ALIASES]:
                if name.startswith(prefix):
                    yield Completion(name, -len(prefix), display_meta=_summary(name))
            return
        name = ALIASES.get(words[0], words[0])
        command = COMMANDS.get(name)
        if command is None:
            return
        prefix = "" if text.endswith(" ") else words[-1]
        position = len(words) - (0 if text.endswith(" ") else 1)  # index of the word being typed
        candidates: list[str] = []
        if name == "help" and position == 1:
            candidates = list(COMMANDS)
        elif name == "shutdown" and position == 1:
            candidates = ["graceful", "quick"]
        elif name == "kill" and position == 2:
            candidates = list(SIGNAL_NAMES)
        elif command.takes_ids and (name != "kill" or position == 1):
            try:
                candidates = [str(i) for i in self.worker_ids()]
            except ControlError:
                candidates = []
            if name == "restart" and position == 1:
                candidates.append("all")
        for candidate in candidates:
            if candidate.startswith(prefix):
                yield Completion(candidate, -len(prefix))


def _summary(name: str) -> str:
    command = COMMANDS[ALIASES.get(name, name)]
    return command.summary


class Console:
    """Reads lines, runs them through a control client, prints the results.

    The prompt, the live view and every print run in one asyncio loop (:meth:`run`), the only
    writer of the terminal (:class:`~stereo.control.terminal.TerminalWriter`); a command waits
    for the master in a thread, so output keeps coming above the prompt meanwhile."""

    def __init__(
        self,
        client: ControlClient,
        *,
        in_place: bool = False,
        live_output: bool = False,
        follow_path: str | None = None,
        history: History | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.in_place = in_place
        self.live_output = live_output  # worker output shows above the prompt anyway
        # Where `logs -f` connects: the control socket (in place: None while worker output is
        # shown live anyway, or when there is no socket to follow through).
        self.follow_path = client.path if follow_path is None and not in_place else follow_path
        self.history = history if history is not None else open_history()
        self.terminal = TerminalWriter()
        self.write = write or self._print
        self._lock = threading.Lock()
        self._stopping = False
        self._running: Application[Any] | None = None
        self.session: PromptSession[str] | None = None
        self.follower: LogFollower | None = None
        self.lost = False  # the master went away (or was told to shut down)

    def _print(self, text: str) -> None:
        self.terminal.write(text + "\n")

    # -- lines -----------------------------------------------------------------------------------

    def worker_ids(self) -> list[int]:
        rows = self.client.request("status", timeout=2.0)
        return sorted({int(row["slot"]) for row in rows})

    def handle(self, line: str) -> bool:
        """Run one line (not ``top``: see :meth:`_handle`); False when the console should end
        (quit, or the master is gone)."""
        try:
            parsed = parse_line(line)
            if parsed is None:
                return True
            command, args = parsed
            if command.name == "quit":
                return False
            if command.name == "help":
                self.write(format_help(args.get("command")))
                return True
            if command.name == "logs" and args.pop("follow", False):
                self.follow(args.get("ids"))
                return True
            result = self.client.request(command.name, args)
            self.write(format_result(command.name, result))
            if command.name == "shutdown":
                self.lost = True  # nothing left to control
                return False
        except ControlUnreachable as exc:
            self.write(f"error: {exc}")
            self.lost = True
            return False
        except UsageError as exc:
            self.write(str(exc))
        except ControlError as exc:
            self.write(f"error: {exc}")
        return True

    def follow(self, ids: list[int] | None) -> None:
        """``logs -f``: new lines above the prompt, until ``logs -f`` again (a toggle)."""
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
            self.write("stopped following the log")
            return
        if self.follow_path is None:
            self.write(
                "worker output is shown here live already"
                if self.live_output
                else "logs -f: no control socket to follow the log through"
            )
            return
        # Said first: the follower's first lines come after it, not before.
        self.write("following the log above the prompt; `logs -f` again stops")
        self.follower = LogFollower(self.follow_path, ids, self.write)
        self.follower.start()

    async def _handle(self, line: str) -> bool:
        """:meth:`handle` in a thread (it waits for the master); the live view in the loop."""
        parsed = None
        try:
            parsed = parse_line(line)
        except UsageError:
            pass  # handle() says what is wrong
        if parsed is not None and parsed[0].name == "top":
            error = await run_top_async(self.client)
            if error is not None:
                self.write(f"error: {error}")
                self.lost = True
                return False
            return True
        return await asyncio.to_thread(self.handle, line)

    # -- the prompt loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Prompt until quit/Ctrl-D (0) or until the master goes away (1)."""
        try:
            return asyncio.run(self._run())
        finally:
            if self.follower is not None:
                self.follower.stop()

    async def _run(self) -> int:
        writer = asyncio.create_task(self.terminal.serve())
        try:
            return await self._prompt_loop()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _prompt_loop(self) -> int:
        self.session = PromptSession(
            history=self.history,
            completer=ConsoleCompleter(self.worker_ids),
            complete_in_thread=True,
            complete_while_typing=False,
        )
        if not self.in_place:
            try:
                rows = await asyncio.to_thread(self.client.request, "status", timeout=5.0)
            except ControlError as exc:
                self.write(f"error: {exc}")
                return 1
            self.write(
                f"connected to {self.client.path}: {len(rows)} worker processes."
                " `help` lists the commands; `quit` detaches."
            )
        while True:
            try:
                line = await self.session.prompt_async(
                    PROMPT,
                    pre_run=self._started,
                    handle_sigint=False,
                    set_exception_handler=False,
                )
            except EOFError:  # Ctrl-D, or stop()
                break
            except KeyboardInterrupt:  # Ctrl-C
                if self.in_place:
                    # As without the console, Ctrl-C in the terminal of `stereo run` stops it.
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    self.write("(Ctrl-C: type `quit` or Ctrl-D to detach, `shutdown` to stop)")
                continue
            finally:
                with self._lock:
                    self._running = None
            if self._stopping:
                break
            if not await self._handle(line):
                break
        return 1 if self.lost else 0

    def _started(self) -> None:
        assert self.session is not None
        with self._lock:
            self._running = self.session.app
            if self._stopping:
                self.session.app.exit(exception=EOFError)

    def stop(self) -> None:
        """End the prompt from any thread (the master is exiting)."""
        with self._lock:
            self._stopping = True
            app = self._running
            if app is not None and app.loop is not None:
                app.loop.call_soon_threadsafe(_exit_if_running, app)


def _exit_if_running(app: Application[Any]) -> None:
    if app.is_running and app.future is not None and not app.future.done():
        app.exit(exception=EOFError)


def run_console(path: str) -> int:
    """``stereo console``: attach to the master at ``path``. Exit status for the CLI."""
    try:
        client = ControlClient.connect(path)
    except ControlUnreachable as exc:
        print(f"stereo console: {exc}", file=sys.stderr)
        return 1
    with client:
        code = Console(client).run()
    print("detached; the master keeps running" if code == 0 else "console ended")
    return code


# -- in place, in the terminal of `stereo run` ---------------------------------------------------


async def run_in_place(
    serve_stream: Callable[[trio.SocketStream, bool], Awaitable[None]],
    redirect_output: Callable[[Callable[[bytes], None]], AbstractContextManager[object]],
    *,
    stopping: Callable[[], bool],
    log: Callable[[str], None],
    reattach_path: str | None,
    live_output: bool = True,
) -> None:
    """Offer the console in the master's own terminal; worker output goes above the prompt.

    The prompt runs in a thread with its own (asyncio) loop; it reaches the master through a
    socketpair that ``serve_stream`` serves as a trusted control connection. Output is redirected
    from here, on the trio side, for as long as the console runs: ``redirect_output(writer)``
    sends the master's output through ``writer`` until the context ends. ``stopping`` says
    whether the master is on its way out (then it does not say the console detached).
    ``live_output`` False: the output goes elsewhere (--log-file); ``logs -f`` then follows the
    log through ``reattach_path``."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    follow_path = None if live_output else reattach_path
    console = Console(
        ControlClient(theirs, "this master"),
        in_place=True,
        live_output=live_output,
        follow_path=follow_path,
    )
    done = threading.Event()
    failures: list[Exception] = []

    def thread() -> None:
        try:
            console.write(
                "stereo console: `help` lists the commands; `quit` or Ctrl-D detaches"
                " (the master keeps running); Ctrl-C stops the master."
            )
            console.run()
        except Exception as exc:  # the console must never take the master down
            failures.append(exc)
        finally:
            done.set()

    try:
        # Worker output and the console's answers both go through the console's terminal
        # writer, whole lines at a time, so they never interleave mid-line and always land
        # above the prompt.
        with redirect_output(console.terminal.write_bytes):
            async with trio.open_nursery() as nursery:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
                nursery.start_soon(serve_stream, stream, True)
                try:
                    await trio.to_thread.run_sync(thread, abandon_on_cancel=True)
                finally:
                    # The master is exiting (we were cancelled): end the prompt and give the
                    # terminal back before it does.
                    console.stop()
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await trio.to_thread.run_sync(done.wait, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()
        for exc in failures:
            log(f"console failed: {exc!r}; detached")
        if not stopping():
            log(
                "console detached; the master keeps running"
                + (
                    f" (re-attach with `stereo console --control {reattach_path}`)"
                    if reattach_path
                    else ""
                )
            )
    finally:
        theirs.close()
