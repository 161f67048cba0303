"""The shell commands of the docs, read from their Markdown, and how the test runs each one.

The convention (tests/test_docs_commands.py runs it):

- A fenced block whose info string starts with ``sh`` (or ``bash``, ``shell``) holds commands to
  run, one a line (a line ending in ``\\`` goes on), from the checkout's root, in one shell per
  page: a page is one terminal, whose state (``. .venv/bin/activate``, ``export``) carries on
  from block to block. The shell starts *without* ``stereo`` on PATH, as a new terminal would.
- A block that cannot run here says why in its info string: ```` ```sh skip: needs root ````.
  Commands shown with a ``$`` prompt in any other block are refused: they belong in a ``sh``
  block, or in a ``skip:`` one.
- A line that ends with ``stereo run ...`` starts a master in the background (what comes before
  it on the line, ``a && b &&``, runs first, in the foreground). The commands after it run
  against it once its workers are ready; the next master line, or the page's end, stops it with
  SIGTERM, and it must exit 0. A ``stereo run`` that exits by itself (``--help``) is an
  ordinary command.

What the test changes in a command before running it, each visible in a failure's report:

- a ``HOST:PORT`` bind of a master gets port 0, and that port, wherever a later command names
  it (``curl http://127.0.0.1:8000/``), becomes the port the master reports it bound: nothing
  collides with what else runs on the machine;
- ``python3 -m venv .venv`` checks that the venv exists (the checkout's ``.venv`` is the venv
  running the tests; creating it again would break the tests' own environment);
- ``pip install ARGS`` runs with ``--dry-run --no-index``: it changes nothing and downloads
  nothing, yet fails when a name, an extra or a path does not resolve against what is installed
  (the distribution's name included: ``pip install trio-stereo``);
- ``python -m pytest ...`` (the suite itself) only collects: running the suite inside itself
  would recurse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHELL_LANGUAGES = {"sh", "bash", "shell"}
SKIP = re.compile(r"^skip:\s*(?P<reason>.*\S)?\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
PROMPT = re.compile(r"^\s*\$ \S")

# The last command of a line, when it starts a master.
MASTER = re.compile(
    r"(?:^|&&|;)\s*(?P<master>(?:\w+=\S*\s+)*"  # VAR=value ...
    r"(?:\S*/)?(?:stereo|python3? -m stereo)\s+run\b[^;&|]*?)\s*$"
)
HEREDOC = re.compile(r"<<-?\s*(?P<quote>['\"]?)(?P<word>\w+)(?P=quote)")
# A TCP bind of a master: --bind/-b HOST:PORT or [V6]:PORT.
TCP_BIND = re.compile(
    r"(?P<option>(?:--bind|-b)[= ]?)(?P<host>\[[^\]\s]+\]|[^\s:\[\]]+):(?P<port>\d+)\b"
)
LISTENING = re.compile(r"listening on (?:\[[^\]\s]+\]|[^\s:\"]+):(?P<port>\d+)\b")
CONTROL_READY = re.compile(r"control socket: (?P<path>[^\s\"]+)")
#: The master's line when a worker has said READY (stereo/master/supervisor.py).
WORKER_READY = re.compile(r"\[stereo\] worker (\d+) \(pid \d+\) ready$")
CONTROL_DISABLED = re.compile(r"control socket disabled: .*")

VENV_CREATE = re.compile(r"\bpython3? -m venv (?P<path>\.venv)\b")
PIP_INSTALL = re.compile(r"(?<![\w./-])(?P<pip>(?:\S*/)?pip3?|python3? -m pip) install\b")
PIP_DRY_RUN = "--dry-run --no-index --no-build-isolation"
PYTEST = re.compile(r"(?P<pytest>-m pytest\b[^;&|#]*?)(?P<end>\s*(?:#.*)?$|\s*[;&|])")


class DocSyntaxError(Exception):
    """A block this convention cannot read (an unclosed fence, a skip without a reason)."""


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # as written (continuation lines joined)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence
    language: str
    skip: str | None  # the reason, for a block not run
    body: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in SHELL_LANGUAGES and self.skip is None

    def commands(self) -> list[Command]:
        """Non-empty, non-comment lines, with ``\\`` continuations joined and a here-document
        (``cat > app.toml <<'EOF'``) kept with its command, up to its terminator."""
        found: list[Command] = []
        pending: list[str] = []
        terminator: str | None = None
        start = 0
        for number, raw in enumerate(self.body, start=self.line + 1):
            if terminator is not None:
                pending.append(raw)
                if raw.strip() == terminator:
                    found.append(Command(self.page, start, "\n".join(pending)))
                    pending, terminator = [], None
                continue
            if not pending:
                if not raw.strip() or raw.lstrip().startswith("#"):
                    continue
                start = number
            if raw.rstrip().endswith("\\"):
                pending.append(raw.rstrip()[:-1])
                continue
            line = " ".join([*pending, raw]).strip()
            if heredoc := HEREDOC.search(without_comment(line)):
                pending, terminator = [line], heredoc["word"]
                continue
            found.append(Command(self.page, start, line))
            pending = []
        if terminator is not None:
            raise DocSyntaxError(
                f"{self.page}:{start}: the here-document never ends ({terminator})"
            )
        if pending:
            raise DocSyntaxError(f"{self.page}:{start}: the block ends inside a `\\` continuation")
        return found

    def prompt_lines(self) -> list[int]:
        """Lines written as ``$ command`` (a transcript's typed commands)."""
        return [n for n, raw in enumerate(self.body, start=self.line + 1) if PROMPT.match(raw)]


def read_blocks(page: str, text: str) -> list[Block]:
    """Every fenced block of a Markdown page, with its info string read by the convention."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language, _, rest = opening["info"].strip().partition(" ")
        skip = None
        if rest.strip().startswith("skip"):
            marker = SKIP.match(rest.strip())
            if marker is None or marker["reason"] is None:
                raise DocSyntaxError(f"{page}:{i + 1}: `skip:` needs a reason after it")
            skip = marker["reason"]
        end = i + 1
        while end < len(lines) and not (
            (closing := FENCE.match(lines[end]))
            and closing["fence"].startswith(fence)
            and not closing["info"].strip()
        ):
            end += 1
        if end == len(lines):
            raise DocSyntaxError(f"{page}:{i + 1}: the fence is never closed")
        body = tuple(
            line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end]
        )
        blocks.append(Block(page, i + 1, language, skip, body))
        i = end + 1
    return blocks


def without_comment(text: str) -> str:
    """The command without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def split_master(text: str) -> tuple[str, str] | None:
    """For a line that starts a master: (what runs before it on the line, the master command)."""
    text = without_comment(text)
    found = MASTER.search(text)
    if found is None:
        return None
    before = text[: found.start("master")].rstrip()
    if before.endswith("&&"):
        before = before[:-2].rstrip()
    elif before.endswith(";"):
        before = before[:-1].rstrip()
    return before, found["master"]


def free_ports(master: str) -> tuple[str, list[int]]:
    """The master command with its TCP binds on port 0, and the ports the doc wrote, in order."""
    written: list[int] = []

    def port_zero(bind: re.Match[str]) -> str:
        written.append(int(bind["port"]))
        return f"{bind['option']}{bind['host']}:0"

    return TCP_BIND.sub(port_zero, master), written


def with_ports(text: str, ports: dict[int, int]) -> str:
    """A later command, with each port the doc wrote replaced by the one really bound."""
    for written, bound in ports.items():
        text = re.sub(rf"(?<![\d.]){written}(?!\d|\.\d)", str(bound), text)
    return text


@dataclass(frozen=True)
class Prepared:
    text: str  # what runs
    pip: bool  # a dry-run pip install: its warnings are failures too


def prepare(text: str) -> Prepared:
    """The substitutions of the module docstring other than ports."""
    text = VENV_CREATE.sub(r"test -x \g<path>/bin/python", text)
    text, pips = PIP_INSTALL.subn(rf"\g<pip> install {PIP_DRY_RUN}", text)
    text = PYTEST.sub(r"\g<pytest> --collect-only\g<end>", text)
    return Prepared(text, pips > 0)
