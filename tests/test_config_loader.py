"""stereo.config_loader: which config file is read (-c, $STEREO_CONFIG, ./pyproject.toml's
[tool.stereo]), its errors naming the file, and the command line read apart from its defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stereo.argtypes import number as _number
from stereo.argtypes import whole as _whole
from stereo.cli import build_parser
from stereo.config_loader import find_config_file, load_run_config
from stereo.config_sources import COMMAND_LINE, DEFAULT, ConfigFile, Source, SourceError
from stereo.master.binds import parse_bind


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_pyproject_in_the_current_directory_is_read_from_its_tool_stereo_table(
    tmp_path: Path,
) -> None:
    assert find_config_file(None, {}, tmp_path) is None
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\n')
    assert find_config_file(None, {}, tmp_path) is None  # not ours: no [tool.stereo]
    write(tmp_path / "pyproject.toml", '[tool.stereo]\napp = "chat:serve"\nworkers = 2\n')
    assert find_config_file(None, {}, tmp_path) == ConfigFile(
        "pyproject.toml [tool.stereo]", {"app": "chat:serve", "workers": 2}
    )
    # Only there: not in a parent directory.
    (tmp_path / "sub").mkdir()
    assert find_config_file(None, {}, tmp_path / "sub") is None


def test_an_explicit_file_replaces_the_pyproject_lookup(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.stereo]\nworkers = 2\n")
    write(tmp_path / "stereo.toml", "workers = 3\n")
    assert find_config_file("stereo.toml", {}, tmp_path) == ConfigFile(
        "stereo.toml", {"workers": 3}
    )
    via_env = find_config_file(None, {"STEREO_CONFIG": "stereo.toml"}, tmp_path)
    assert via_env == ConfigFile("stereo.toml", {"workers": 3})
    # -c wins over $STEREO_CONFIG; a file named pyproject.toml is read from [tool.stereo].
    other = find_config_file("pyproject.toml", {"STEREO_CONFIG": "stereo.toml"}, tmp_path)
    assert other == ConfigFile("pyproject.toml [tool.stereo]", {"workers": 2})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.toml", None, "missing.toml: cannot read the config file: No such file or"),
        ("bad.toml", "workers = = 2\n", "bad.toml: not valid TOML: Invalid value (at line 1,"),
        ("bin.toml", b"app = '\xff'\n", "bin.toml: not valid TOML: "),
        ("pyproject.toml", "[project]\n", "pyproject.toml: has no [tool.stereo] table"),
        ("pyproject.toml", "tool.stereo = 5\n", "pyproject.toml: tool.stereo must be a table"),
    ],
)
def test_file_errors_name_the_file(
    tmp_path: Path, name: str, text: str | bytes | None, message: str
) -> None:
    if isinstance(text, str):
        write(tmp_path / name, text)
    elif text is not None:
        (tmp_path / name).write_bytes(text)
    with pytest.raises(SourceError) as info:
        find_config_file(name, {}, tmp_path)
    assert str(info.value).startswith(message)


def test_the_command_line_wins_and_only_what_it_names(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.stereo]\napp = "a:b"\nbind = ["127.0.0.1:1"]\n')
    argv = ["run", "--bind", "127.0.0.1:2", "--no-proxy-headers", "--timeout", "30"]
    parser = build_parser()
    args = parser.parse_args(argv)
    specs, resolved = load_run_config(
        parser, argv, args.config, {"STEREO_TIMEOUT": "9"}, tmp_path, (_whole, _number)
    )
    assert resolved.values["binds"] == [parse_bind("127.0.0.1:2")]
    assert resolved.sources["binds"] == COMMAND_LINE
    assert (resolved.values["proxy_headers"], resolved.sources["proxy_headers"]) == (
        False,
        COMMAND_LINE,
    )
    # Given on the command line with the default's value: still the command line's.
    assert (resolved.values["timeout"], resolved.sources["timeout"]) == (30.0, COMMAND_LINE)
    assert resolved.values["app"] == "a:b"
    assert resolved.sources["app"] == Source("file", "pyproject.toml [tool.stereo]")
    assert resolved.sources["max_workers"] == DEFAULT
    assert "config" not in resolved.values and "print_config" not in resolved.values
    assert {spec.dest for spec in specs} == set(resolved.values)
