"""docs/cli.md documents every ``stereo run`` option, once, with its environment variable and its
config key: the tables with the columns ``| Option | Environment, config key | Default | Meaning |``
are checked against the run parser, so an option added to the parser without its row (or a row
left behind by a removed option) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stereo.argtypes import number as _number
from stereo.argtypes import whole as _whole
from stereo.cli import build_parser
from stereo.config_loader import META_DESTS, run_subparser
from stereo.config_sources import CONFIG_ENV, OptionSpec, specs_from_parser

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADER = "| Option | Environment, config key | Default | Meaning |"
SPECS = specs_from_parser(
    run_subparser(build_parser()), numbers=(_whole, _number), exclude=META_DESTS
)
# Options that are no settings: where the configuration is, and what to do with it.
META_ROWS = {"--config": f"`{CONFIG_ENV}` (no key)", "--print-config": "none", "--help": "none"}


def option_rows(text: str) -> list[list[str]]:
    """The cells of every row of the tables with HEADER."""
    rows: list[list[str]] = []
    in_table = False
    for line in text.splitlines():
        if line == HEADER:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert len(cells) == 4, f"docs/cli.md: a row without 4 cells: {line}"
            rows.append(cells)
    return rows


def names(cell: str) -> set[str]:
    """The options a row's first cell names: `-w N`, `--workers N` -> {"--workers"}."""
    found = set(re.findall(r"`(--[a-z][a-z0-9-]*)", cell))
    if cell.startswith("`MODULE:ATTR`"):
        found.add("MODULE:ATTR")
    return {name for name in found if not name.startswith("--no-")} or {
        name for name in re.findall(r"`(--[a-z][a-z0-9-]*)", cell)
    }


ROWS = option_rows(CLI_MD.read_text())


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.key)
def test_every_run_option_has_one_row_with_its_environment_variable_and_config_key(
    spec: OptionSpec,
) -> None:
    rows = [row for row in ROWS if spec.flag in names(row[0])]
    assert len(rows) == 1, f"docs/cli.md: {len(rows)} rows for {spec.flag} (one wanted)"
    expected = (
        f"`{spec.env[0]}`"
        + "".join(f" (or `{alias}`)" for alias in spec.env[1:])
        + f", `{spec.key}`"
    )
    assert rows[0][1] == expected, f"docs/cli.md, {spec.flag}: write {expected!r}"


def test_the_options_that_are_no_settings_have_their_rows() -> None:
    for flag, cell in META_ROWS.items():
        rows = [row for row in ROWS if flag in names(row[0])]
        assert [row[1] for row in rows] == [cell], flag


def test_no_row_documents_an_option_the_parser_does_not_have() -> None:
    known = {spec.flag for spec in SPECS} | set(META_ROWS)
    for row in ROWS:
        assert names(row[0]) <= known, f"docs/cli.md: {row[0]} is no option of stereo run"
        assert names(row[0]), f"docs/cli.md: a row that names no option: {row[0]}"


def test_the_checker_reads_rows_as_written() -> None:
    text = (
        f"{HEADER}\n|---|---|---|---|\n| `-w N`, `--workers N` | `A`, `b` | 1 | x \\| y |\n\nafter"
    )
    assert option_rows(text) == [["`-w N`, `--workers N`", "`A`, `b`", "1", "x \\| y"]]
    assert names("`--proxy-headers`, `--no-proxy-headers`") == {"--proxy-headers"}
    assert names("`MODULE:ATTR`") == {"MODULE:ATTR"}
