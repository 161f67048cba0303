"""stereo.config_sources, on its own: every run option's value and source from the command line,
the environment and a config file (in that order), the type conversions, the errors naming their
source, and ``--print-config``'s rendering, which reads back the same."""

from __future__ import annotations

import argparse
import string
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stereo.argtypes import number as _number
from stereo.argtypes import whole as _whole
from stereo.cli import build_parser
from stereo.config_loader import META_DESTS, run_subparser
from stereo.config_sources import (
    COMMAND_LINE,
    DEFAULT,
    ConfigFile,
    Kind,
    OptionSpec,
    Source,
    SourceError,
    blame,
    render,
    resolve,
    specs_from_parser,
    toml_value,
)
from stereo.master import upgrade
from stereo.master.binds import parse_bind

SPECS = specs_from_parser(
    run_subparser(build_parser()), numbers=(_whole, _number), exclude=META_DESTS
)
BY_KEY = {spec.key: spec for spec in SPECS}


def file(**table: Any) -> ConfigFile:
    return ConfigFile("stereo.toml", {key.replace("_", "-"): value for key, value in table.items()})


def test_every_option_has_a_key_and_an_environment_variable() -> None:
    assert BY_KEY["workers"].env == ("STEREO_WORKERS", "WEB_CONCURRENCY")
    assert BY_KEY["max-workers"].env == ("STEREO_MAX_WORKERS",)
    assert BY_KEY["forwarded-allow-ips"].env == (
        "STEREO_FORWARDED_ALLOW_IPS",
        "FORWARDED_ALLOW_IPS",
    )
    assert BY_KEY["control"].env == ("STEREO_CONTROL",)  # as default_control_path reads it
    assert (BY_KEY["app"].flag, BY_KEY["app"].env) == ("MODULE:ATTR", ("STEREO_APP",))
    assert BY_KEY["bind"].dest == "binds" and BY_KEY["bind"].kind is Kind.LIST
    assert BY_KEY["proxy-headers"].kind is Kind.FLAG  # --proxy-headers / --no-proxy-headers
    assert BY_KEY["workers"].numeric and not BY_KEY["root-path"].numeric
    assert not {"config", "print-config", "help"} & set(BY_KEY)


@settings(max_examples=200)
@given(
    on_command_line=st.booleans(),
    stereo_var=st.booleans(),
    web_concurrency=st.booleans(),
    in_file=st.booleans(),
)
def test_precedence_is_command_line_environment_file_default(
    on_command_line: bool, stereo_var: bool, web_concurrency: bool, in_file: bool
) -> None:
    environ = {}
    if stereo_var:
        environ["STEREO_WORKERS"] = "2"
    if web_concurrency:
        environ["WEB_CONCURRENCY"] = "3"
    given = {"workers": 1} if on_command_line else {}
    resolved = resolve(SPECS, given, environ, file(workers=4) if in_file else None)
    expected = (
        (1, COMMAND_LINE)
        if on_command_line
        else (2, Source("environment", "STEREO_WORKERS"))
        if stereo_var
        else (3, Source("environment", "WEB_CONCURRENCY"))
        if web_concurrency
        else (4, Source("file", "stereo.toml"))
        if in_file
        else (None, DEFAULT)
    )
    assert (resolved.values["workers"], resolved.sources["workers"]) == expected


def test_a_list_on_the_command_line_replaces_the_files() -> None:
    binds = [parse_bind("127.0.0.1:1")]
    resolved = resolve(SPECS, {"binds": binds}, {}, file(bind=["127.0.0.1:2", "unix:/x"]))
    assert resolved.values["binds"] == binds


def test_lists_from_the_environment_are_comma_separated_and_from_a_file_a_list_or_one() -> None:
    env = resolve(SPECS, {}, {"STEREO_BIND": " 127.0.0.1:8000, unix:/run/a.sock ,"}, None)
    assert env.values["binds"] == [parse_bind("127.0.0.1:8000"), parse_bind("unix:/run/a.sock")]
    one = resolve(SPECS, {}, {}, file(bind="[::1]:80"))
    assert one.values["binds"] == [parse_bind("[::1]:80")]
    with pytest.raises(SourceError, match=r"^bind = \[1\] \(file stereo.toml\): must be a string"):
        resolve(SPECS, {}, {}, file(bind=[1]))
    with pytest.raises(SourceError, match=r"^STEREO_BIND='a:b:c' \(environment\): "):
        resolve(SPECS, {}, {"STEREO_BIND": "a:b:c"}, None)


@pytest.mark.parametrize(
    ("word", "value"),
    [(w, True) for w in ("1", "true", "TRUE", "yes", "On ")]
    + [(w, False) for w in ("0", "false", "No", "off")],
)
def test_booleans_from_the_environment(word: str, value: bool) -> None:
    resolved = resolve(SPECS, {}, {"STEREO_PROXY_HEADERS": word, "STEREO_NO_CONSOLE": word}, None)
    assert resolved.values["proxy_headers"] is value
    assert resolved.values["no_console"] is value


def test_bad_booleans_name_their_source() -> None:
    with pytest.raises(SourceError) as info:
        resolve(SPECS, {}, {"STEREO_REUSE_PORT": "maybe"}, None)
    assert str(info.value) == (
        "STEREO_REUSE_PORT='maybe' (environment):"
        " must be 1 or 0, true or false, yes or no, on or off"
    )
    with pytest.raises(SourceError, match=r"^reuse-port = 1 \(file stereo.toml\): must be true or"):
        resolve(SPECS, {}, {}, file(reuse_port=1))


@pytest.mark.parametrize(
    ("environ", "table", "message"),
    [
        ({"STEREO_WORKERS": "abc"}, {}, "STEREO_WORKERS='abc' (environment): not a whole number"),
        ({"WEB_CONCURRENCY": "2.5"}, {}, "WEB_CONCURRENCY='2.5' (environment): not a whole number"),
        ({}, {"workers": 2.5}, "workers = 2.5 (file stereo.toml): not a whole number"),
        ({}, {"workers": True}, "workers = true (file stereo.toml): must be a number or a string"),
        ({}, {"timeout": "soon"}, 'timeout = "soon" (file stereo.toml): not a number of seconds'),
        ({}, {"root-path": 5}, "root-path = 5 (file stereo.toml): must be a string"),
        ({}, {"app-dir": ["a"]}, 'app-dir = ["a"] (file stereo.toml): must be a string'),
        (
            {"STEREO_INTERFACE": "wsgi"},
            {},
            "STEREO_INTERFACE='wsgi' (environment): must be one of auto, asgi, serve",
        ),
        (
            {},
            {"wokers": 2},
            "wokers (file stereo.toml): not an option of stereo run; did you mean workers?",
        ),
        ({}, {"zzz": 2}, "zzz (file stereo.toml): not an option of stereo run"),
        ({}, {"config": "x"}, "config (file stereo.toml): not an option of stereo run"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_source(
    environ: dict[str, str], table: dict[str, Any], message: str
) -> None:
    with pytest.raises(SourceError) as info:
        resolve(SPECS, {}, environ, ConfigFile("stereo.toml", table))
    assert str(info.value) == message


def test_numbers_from_a_file_go_through_the_clis_parsers() -> None:
    resolved = resolve(SPECS, {}, {}, file(workers=3, timeout=2, graceful_timeout="1.5"))
    assert resolved.values["workers"] == 3
    assert resolved.values["timeout"] == 2.0 and isinstance(resolved.values["timeout"], float)
    assert resolved.values["graceful_timeout"] == 1.5
    # Ranges are Settings.check's: a syntactically good number passes here.
    assert resolve(SPECS, {}, {"STEREO_WORKERS": "-5"}, None).values["workers"] == -5


def test_an_empty_variable_counts_as_unset() -> None:
    resolved = resolve(SPECS, {}, {"STEREO_WORKERS": " ", "WEB_CONCURRENCY": "2"}, file(workers=4))
    assert resolved.sources["workers"] == Source("environment", "WEB_CONCURRENCY")


def test_misspelt_variables_are_warned_about_and_other_stereo_variables_left_alone() -> None:
    ours = {
        upgrade.ENV_FDS: "3",
        upgrade.ENV_NOTIFY: "4",
        upgrade.ENV_FROM: "1",
        upgrade.ENV_WORKERS: "2",
        "STEREO_HUB_FD": "5",
        "STEREO_PURE_PYTHON": "1",
        "STEREO_RELAY": "python",
        "STEREO_BENCH_REDIS_URL": "redis://x",
        "STEREO_CONFIG": "x.toml",
    }
    resolved = resolve(SPECS, {}, {**ours, "STEREO_WOKERS": "2", "STEREO_MAX_WORKER": "3"}, None)
    assert resolved.warnings == [
        "STEREO_MAX_WORKER (environment): not an option of stereo run, ignored; did you mean"
        " STEREO_MAX_WORKERS?",
        "STEREO_WOKERS (environment): not an option of stereo run, ignored; did you mean"
        " STEREO_WORKERS?",
    ]
    assert resolved.values["workers"] is None


def test_range_errors_are_blamed_on_their_source() -> None:
    resolved = resolve(SPECS, {}, {"WEB_CONCURRENCY": "5000"}, None)
    message = "--workers 5000: must be a whole number from 0 to 1024 (--max-workers)"
    assert blame(message, SPECS, resolved) == (
        "--workers 5000 (environment WEB_CONCURRENCY): must be a whole number from 0 to 1024"
        " (--max-workers)"
    )
    assert blame(message, SPECS, resolve(SPECS, {"workers": 5000}, {}, None)) == message
    assert blame("--max-workers 0: x", SPECS, resolved) == "--max-workers 0: x"


def toy_parser() -> argparse.ArgumentParser:
    """Actions the run parser does not use yet, as the other option groups may add them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemon", dest="foreground", action="store_false")
    parser.add_argument("--mode", action="store_const", const="fast", default="slow")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--include", action="extend", nargs="+", default=[])
    parser.add_argument("--pair", nargs=2, type=int)
    parser.add_argument("--level", choices=["a", "b"], default="a")
    return parser


def test_every_kind_of_action_has_a_configuration_form() -> None:
    specs = specs_from_parser(toy_parser())
    kinds = {spec.key: spec.kind for spec in specs}
    assert kinds == {
        "daemon": Kind.FLAG,
        "mode": Kind.FLAG,
        "verbose": Kind.COUNT,
        "include": Kind.LIST,
        "pair": Kind.LIST,
        "level": Kind.VALUE,
    }
    on = resolve(
        specs, {}, {"STEREO_DAEMON": "yes", "STEREO_MODE": "1", "STEREO_VERBOSE": "2"}, None
    )
    assert (on.values["foreground"], on.values["mode"], on.values["verbose"]) == (False, "fast", 2)
    off = resolve(
        specs, {}, {}, ConfigFile("f", {"daemon": False, "mode": False, "pair": ["1", "2"]})
    )
    assert (off.values["foreground"], off.values["mode"], off.values["pair"]) == (
        True,
        "slow",
        [1, 2],
    )
    with pytest.raises(
        SourceError, match=r"^STEREO_PAIR='1,x' \(environment\): invalid int value$"
    ):
        resolve(specs, {}, {"STEREO_PAIR": "1,x"}, None)


def test_actions_without_a_configuration_form_are_refused_when_the_parser_is_read() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", action="append", nargs=2)
    with pytest.raises(ValueError, match="nested lists"):
        specs_from_parser(parser)
    parser = argparse.ArgumentParser()
    parser.add_argument("--custom", action=argparse.Action)  # its __call__ would be bypassed
    with pytest.raises(ValueError, match="no configuration form for this action"):
        specs_from_parser(parser)
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", dest="same")
    parser.add_argument("--b", dest="same")
    with pytest.raises(ValueError, match="several options store into 'same'"):
        specs_from_parser(parser)


TEXT = st.text(max_size=20)  # no lone surrogates: a TOML file cannot hold them
BIND = st.one_of(
    st.builds("127.0.0.1:{}".format, st.integers(0, 65535)),
    st.builds("unix:/tmp/{}".format, st.text(string.ascii_letters + "-_.,", min_size=1)),
    st.builds("fd://{}".format, st.integers(0, 2**31 - 1)),
)
FILES = st.fixed_dictionaries(
    {},
    optional={
        "app": TEXT,
        "workers": st.integers(-(2**70), 2**70),
        "timeout": st.floats(allow_nan=False) | st.integers(0, 10**6),
        "graceful-timeout": st.just(float("inf")),
        "bind": st.lists(BIND, max_size=3),
        "root-path": TEXT,
        "reuse-port": st.booleans(),
        "proxy-headers": st.booleans(),
        "interface": st.sampled_from(["auto", "asgi", "serve"]),
    },
)


@settings(max_examples=300)
@given(FILES)
def test_print_config_reads_back_as_the_same_settings(table: dict[str, Any]) -> None:
    resolved = resolve(SPECS, {}, {}, ConfigFile("in.toml", table))
    shown = render(SPECS, resolved)
    again = resolve(SPECS, {}, {}, ConfigFile("out.toml", tomllib.loads(shown)))
    assert again.values == resolved.values
    for spec in SPECS:
        where = "in.toml" if spec.key in table else None
        assert (resolved.sources[spec.dest].where or None) == where


def test_print_config_shows_each_source() -> None:
    resolved = resolve(
        SPECS,
        {"app": "chat:serve"},
        {"WEB_CONCURRENCY": "3"},
        ConfigFile(
            "pyproject.toml [tool.stereo]", {"bind": ["127.0.0.1:8000"], "reuse-port": True}
        ),
    )
    lines = render(SPECS, resolved).splitlines()
    assert any(line.startswith("# stereo run") for line in lines)
    width = lines[1].index("#")

    def row(text: str, source: str) -> str:
        return f"{text:<{width - 2}}  # {source}"

    assert row('app = "chat:serve"', "command line") in lines
    assert row("workers = 3", "environment WEB_CONCURRENCY") in lines
    assert row('bind = ["127.0.0.1:8000"]', "file pyproject.toml [tool.stereo]") in lines
    assert row("reuse-port = true", "file pyproject.toml [tool.stereo]") in lines
    assert row("max-workers = 1024", "default") in lines
    assert row("# control is not set", "default") in lines


@given(st.text())
def test_toml_strings_read_back(text: str) -> None:
    assert tomllib.loads(f"x = {toml_value(text)}") == {"x": text}


def test_spec_defaults_are_converted_as_argparse_converts_them() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default="7")
    (spec,) = specs_from_parser(parser)
    assert spec == OptionSpec(
        key="n", dest="n", flag="--n", kind=Kind.VALUE, default=7, convert=int, env=("STEREO_N",)
    )


def test_undecodable_command_line_bytes_are_printed_escaped() -> None:
    shown = toml_value("caf\udce9")  # b"caf\xe9" through the filesystem encoding
    shown.encode("utf-8")  # printable
    assert tomllib.loads(f"x = {shown}") == {"x": "caf\\udce9"}


def test_the_names_read_before_configuration_existed_still_work() -> None:
    resolved = resolve(
        SPECS, {}, {"FORWARDED_ALLOW_IPS": "10.0.0.1,10.0.0.2", "STEREO_CONTROL": "/x.sock"}, None
    )
    assert resolved.values["forwarded_allow_ips"] == "10.0.0.1,10.0.0.2"
    assert resolved.sources["forwarded_allow_ips"] == Source("environment", "FORWARDED_ALLOW_IPS")
    assert resolved.values["control"] == "/x.sock"
