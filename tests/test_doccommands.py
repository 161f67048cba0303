"""The pure half of the docs' command test: reading blocks, and what is substituted."""

from __future__ import annotations

import pytest
from doccommands import (
    DocSyntaxError,
    free_ports,
    prepare,
    read_blocks,
    split_master,
    with_ports,
    without_comment,
)

PAGE = """\
# Title

```sh
. .venv/bin/activate   # comment
stereo run app:serve \\
    -w 2 --bind 127.0.0.1:8000

# a comment line
curl http://127.0.0.1:8000/
```

```sh skip: needs root
systemctl start app
```

```text
$ stereo ctl status
```

- a list:

  ```bash
  echo indented
  ```
"""


def test_blocks_languages_skips_and_lines() -> None:
    blocks = read_blocks("p.md", PAGE)
    assert [(b.line, b.language, b.skip, b.runs) for b in blocks] == [
        (3, "sh", None, True),
        (12, "sh", "needs root", False),
        (16, "text", None, False),
        (22, "bash", None, True),
    ]
    assert blocks[2].prompt_lines() == [17]
    assert [c.text for c in blocks[3].commands()] == ["echo indented"]


def test_commands_join_continuations_and_drop_comments() -> None:
    commands = read_blocks("p.md", PAGE)[0].commands()
    assert [(c.where, c.text) for c in commands] == [
        ("p.md:4", ". .venv/bin/activate   # comment"),
        ("p.md:5", "stereo run app:serve      -w 2 --bind 127.0.0.1:8000"),
        ("p.md:9", "curl http://127.0.0.1:8000/"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```sh skip:\nx\n```\n", "p.md:1: `skip:` needs a reason"),
        ("```sh\nx\n", "p.md:1: the fence is never closed"),
        ("```sh\nx \\\n```\n", "p.md:2: the block ends inside"),
    ],
)
def test_unreadable_blocks_are_refused_with_their_line(text: str, problem: str) -> None:
    with pytest.raises(DocSyntaxError, match=problem):
        for block in read_blocks("p.md", text):
            block.commands()


def test_a_master_is_the_last_command_of_its_line() -> None:
    assert split_master("python3 -m venv .venv && .venv/bin/stereo run a:b -w 4  # go") == (
        "python3 -m venv .venv",
        ".venv/bin/stereo run a:b -w 4",
    )
    assert split_master("stereo run a:b") == ("", "stereo run a:b")
    assert split_master("python -m stereo run a:b --bind 127.0.0.1:0") == (
        "",
        "python -m stereo run a:b --bind 127.0.0.1:0",
    )
    assert split_master("STEREO_WORKERS=2 stereo run a:b") == (
        "",
        "STEREO_WORKERS=2 stereo run a:b",
    )
    assert split_master("stereo ctl status") is None
    assert split_master("stereo run a:b | tee log") is None  # not a master of this convention


def test_comments_end_only_outside_quotes() -> None:
    assert without_comment("echo '# not' \"#no\" a#b  # yes") == "echo '# not' \"#no\" a#b"


def test_binds_get_port_zero_and_later_commands_the_bound_port() -> None:
    master, written = free_ports("stereo run a:b --bind 127.0.0.1:8000 -b [::1]:9000 -b unix:/s")
    assert master == "stereo run a:b --bind 127.0.0.1:0 -b [::1]:0 -b unix:/s"
    assert written == [8000, 9000]
    ports = {8000: 41000, 9000: 41001}
    assert with_ports("curl http://127.0.0.1:8000/ && nc ::1 9000", ports) == (
        "curl http://127.0.0.1:41000/ && nc ::1 41001"
    )
    assert with_ports("sleep 18000; echo 8000.5", ports) == "sleep 18000; echo 8000.5"


def test_installs_are_dry_runs_in_the_existing_venv() -> None:
    line = prepare("python3 -m venv .venv && .venv/bin/pip install -e '.[test]'")
    assert line.text == (
        "test -x .venv/bin/python && .venv/bin/pip install --dry-run --no-index"
        " --no-build-isolation -e '.[test]'"
    )
    assert line.pip
    assert prepare("python -m pip install trio-stereo").text.startswith(
        "python -m pip install --dry-run"
    )
    assert not prepare("stereo ctl status").pip
    assert prepare("python3 -m venv .venv2").text == "python3 -m venv .venv2"


def test_the_suite_only_collects() -> None:
    assert prepare(".venv/bin/python -m pytest -q  # all").text == (
        ".venv/bin/python -m pytest -q --collect-only  # all"
    )


def test_a_here_document_stays_with_its_command() -> None:
    page = "```sh\ncat > app.toml <<'EOF'  # the file\nworkers = 2\n\nEOF\nstereo run a:b\n```\n"
    (block,) = read_blocks("p.md", page)
    assert [(c.line, c.text) for c in block.commands()] == [
        (2, "cat > app.toml <<'EOF'  # the file\nworkers = 2\n\nEOF"),
        (6, "stereo run a:b"),
    ]
    with pytest.raises(DocSyntaxError, match=r"p\.md:2: the here-document never ends"):
        read_blocks("p.md", "```sh\ncat <<EOF\nx\n```\n")[0].commands()
