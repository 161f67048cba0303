"""Every numeric setting is checked for range and finiteness before a master starts: in
:meth:`Settings.check` for embedders, and through it by ``stereo run``, which refuses a bad value
with one line and exit 2 instead of tripping on it later (NaN for --graceful-timeout crashed the
master on its first SIGTERM; NaN for --timeout cut off every worker)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import trio
from conftest import open_stereo

from stereo.errors import ConfigError
from stereo.master.config import Settings
from stereo.wire.protocol import LARGEST_MESSAGE_SIZE

BAD: list[tuple[dict[str, object], str]] = [
    ({"graceful_timeout": math.nan}, "--graceful-timeout nan: must be a number of seconds above 0"),
    ({"graceful_timeout": math.inf}, "--graceful-timeout inf: must be a number of seconds"),
    ({"graceful_timeout": 0.0}, "--graceful-timeout 0.0: must be a number of seconds above 0"),
    ({"graceful_timeout": 86401.0}, "and at most 86400"),
    ({"timeout": math.nan}, "--timeout nan: must be a number of seconds from 0.2 to 86400"),
    ({"timeout": 0.1}, "--timeout 0.1: must be"),
    ({"timeout": True}, "--timeout True: must be"),
    ({"max_message_size": 100}, "--max-message-size 100: must be a whole number from 1024 to"),
    ({"max_message_size": LARGEST_MESSAGE_SIZE + 1}, f"to {LARGEST_MESSAGE_SIZE}"),
    ({"outbox_limit": 1000}, "--outbox-limit 1000: must be a whole number of at least 1048593"),
    ({"inbox_limit": 1000}, "--inbox-limit 1000: must be a whole number of at least 1048593"),
    ({"workers": -1}, "--workers -1: must be a whole number from 0 to 1024 (--max-workers)"),
    ({"workers": 5, "max_workers": 4}, "--workers 5: must be a whole number from 0 to 4"),
    ({"max_workers": 0}, "--max-workers 0: must be a whole number from 1 to 65536"),
    ({"max_workers": 10**6}, "--max-workers 1000000: must be"),
    ({"bridge": "kafka://h:9092"}, "--bridge 'kafka://h:9092': must be redis://HOST:PORT/DB or"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_settings_out_of_range_are_refused_naming_the_option(
    changes: dict[str, object], message: str
) -> None:
    settings = replace(Settings(app="a:b", workers=1), **changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        settings.check()
    assert message in str(info.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "nats://127.0.0.1:4222"])
def test_both_bridge_schemes_are_accepted(url: str) -> None:
    Settings(app="a:b", workers=1, bridge=url).check()


def test_the_bounds_themselves_are_accepted() -> None:
    Settings(app="a:b", workers=0, max_workers=1, timeout=0.2, graceful_timeout=86400).check()
    Settings(
        app="a:b",
        workers=65536,
        max_workers=65536,
        max_message_size=1024,
        outbox_limit=1024 + 17,
        inbox_limit=1024 + 17,
    ).check()
    Settings(
        app="a:b",
        workers=1,
        max_message_size=LARGEST_MESSAGE_SIZE,
        outbox_limit=2**32 + 4,
        inbox_limit=2**32 + 4,
    ).check()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--graceful-timeout", "nan"],
            "stereo: --graceful-timeout nan: must be a number of seconds above 0 and at most 86400",
        ),
        (["--timeout", "nan"], "stereo: --timeout nan: must be a number of seconds from 0.2 to"),
        (["--timeout", "1e999"], "stereo: --timeout inf: must be a number of seconds"),
        (["--max-message-size", "16"], "stereo: --max-message-size 16: must be a whole number"),
        (
            ["--max-message-size", str(2**32)],
            f"stereo: --max-message-size {2**32}: must be a whole number from 1024 to"
            f" {LARGEST_MESSAGE_SIZE}",
        ),
        (["--outbox-limit", "1"], "stereo: --outbox-limit 1: must be a whole number of at least"),
        (["--inbox-limit", "1"], "stereo: --inbox-limit 1: must be a whole number of at least"),
        (["-w", "-2"], "stereo: --workers -2: must be a whole number from 0 to 1024"),
    ],
)
async def test_stereo_run_refuses_a_bad_number_with_one_line_and_starts_nothing(
    args: list[str], line: str
) -> None:
    with trio.fail_after(20):
        async with open_stereo("control_app:serve", "-w", "1", *args) as stereo:
            assert await stereo.wait() == 2
    assert len(stereo.lines) == 1 and stereo.lines[0].startswith(line), stereo.lines
