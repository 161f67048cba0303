"""Redis answering the bridge with an error (a stream key of another type, an ACL that forbids
the append script): the bridge keeps the hub's batches and retries with backoff, says Redis's
words once in the master's log and in ``stats``, cuts the workers off after --bridge-timeout as
for an unreachable broker, and resumes with nothing lost or duplicated once the cause is gone.

First the decisions (stereo/bridge/logic.py) on their own, then two real bridged hubs
(tests/test_bridge_faults.py's harness and app) on a private redis-server.
"""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import cbor2
import coredis
import pytest
import trio
from conftest import ctl
from test_bridge_faults import (
    HUBS,
    WORKERS_PER_HUB,
    Hub,
    all_here,
    marks,
    open_hubs,
    resets,
    round_results,
    stop_hubs,
)
from test_bridge_logic import frames_in, logic
from test_bridge_redis import LEAKED_BY_FAILED_CONNECT, RedisServer, needs_redis, redis  # noqa: F401

from stereo.bridge.broker import BrokerRefused, BrokerUnavailable
from stereo.wire.protocol import Kind

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOPERM = "NOPERM this user has no permissions to run the 'evalsha' command"


# -- the decisions ----------------------------------------------------------------------------


def status_of(frame: bytes | None) -> object:
    assert frame is not None
    [(kind, body)] = frames_in(frame)
    assert kind == Kind.BRIDGE_STATUS
    return cbor2.loads(body)["error"]


def test_each_distinct_reason_is_said_once_and_the_hub_told_when_it_changes() -> None:
    bridge = logic(next_seq=5, timeout=10.0)
    assert bridge.status() is None  # nothing to tell yet
    refused = BrokerRefused(f"redis answered: {WRONGTYPE}")
    first = bridge.unavailable(refused, 0, now=100.0, call="append")
    assert first.notes == (f"broker unavailable (redis answered: {WRONGTYPE}); retrying",)
    assert status_of(bridge.status()) == f"redis answered: {WRONGTYPE}"
    assert bridge.unavailable(refused, 1, now=101.0, call="read").notes == ()
    assert bridge.status() is None  # told already
    other = BrokerUnavailable("redis did not answer within 5 s")
    assert bridge.unavailable(other, 2, now=102.0, call="read").notes == (
        "broker unavailable (redis did not answer within 5 s); retrying",
    )
    assert status_of(bridge.status()) == "redis did not answer within 5 s"
    # Reads answer again, appends are still refused: the broker is still away for this hub.
    assert bridge.available("read") is None
    assert bridge.status() is None
    assert bridge.available("append") == "broker reachable again"
    assert status_of(bridge.status()) is None
    # A new outage says its reason again.
    assert bridge.unavailable(refused, 0, now=200.0, call="append").notes != ()


def test_a_refusal_past_the_timeout_resets_in_redis_words_though_reads_answer() -> None:
    bridge = logic(next_seq=5, timeout=10.0)
    refused = BrokerRefused(f"redis answered: {NOPERM}")
    bridge.unavailable(refused, 0, now=100.0, call="append")
    bridge.available("read")  # an ACL that lets this hub read: no reason to forget the outage
    past = bridge.unavailable(refused, 30, now=110.5, call="append")
    assert past.reset is not None
    [(kind, body)] = frames_in(past.reset)
    assert kind == Kind.RESET
    assert cbor2.loads(body) == {
        "reason": f"the broker refused for over 10 s: redis answered: {NOPERM}"
    }
    assert bridge.unavailable(refused, 31, now=111.0, call="append").reset is None  # once


# -- real hubs on a private redis-server ------------------------------------------------------


async def bridge_stats(hub: Hub) -> dict[str, Any]:
    code, out, err = await ctl("--control", str(hub.control), "stats", "--json")
    assert (code, err) == (0, ""), out
    bridge: dict[str, Any] = json.loads(out)["bridge"]
    return bridge


async def stats_text(hub: Hub) -> str:
    code, out, err = await ctl("--control", str(hub.control), "stats")
    assert (code, err) == (0, ""), out
    return out


async def said_once(hubs: list[Hub], start: list[int], words: str) -> None:
    """Each hub's log shows Redis's error, and its stats too."""
    line = rf"^\[bridge\] broker unavailable \(redis answered: {re.escape(words)}"
    for hub, mark in zip(hubs, start, strict=True):
        await hub.stereo.wait_for(line, 1, mark)
        assert words in (await bridge_stats(hub))["broker_error"]
        assert f"broker away: redis answered: {words}" in await stats_text(hub)


def times_said(hub: Hub, mark: int, words: str) -> int:
    line = f"[bridge] broker unavailable (redis answered: {words}"
    return sum(1 for said in hub.stereo.lines[mark:] if said.startswith(line))


@pytest.mark.filterwarnings(LEAKED_BY_FAILED_CONNECT)
@needs_redis
async def test_an_append_refused_within_the_timeout_waits_and_loses_nothing(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The bridges' ACL user loses the right to run the append script in the middle of a round
    (reads still answer), and gets it back: the round completes everywhere in one order,
    nothing lost or duplicated, no RESET; the reason was said once per hub and is gone from
    stats."""
    async with AsyncExitStack() as stack:
        admin = await stack.enter_async_context(coredis.Redis.from_url(redis.url))
        hubs = await open_hubs(stack, [redis.url] * HUBS, tmp_path)
        with trio.fail_after(60):
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[0].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[0])
            await admin.acl_setuser("default", "-evalsha", "-eval")
            try:
                await said_once(hubs, start, NOPERM)
            finally:
                await admin.acl_setuser("default", "+evalsha", "+eval")
            await round_results(hubs, 1, start)
            for hub, mark in zip(hubs, start, strict=True):
                await hub.stereo.wait_for(r"^\[bridge\] broker reachable again$", 1, mark)
                # The status came before the entries appended once the cause was gone, which
                # the round's results needed: the master has it.
                assert (await bridge_stats(hub))["broker_error"] is None
                assert times_said(hub, mark, NOPERM) == 1
        assert resets(hubs, start) == []
        await stop_hubs(hubs)


@pytest.mark.filterwarnings(LEAKED_BY_FAILED_CONNECT)
@needs_redis
async def test_a_stream_key_of_another_type_past_the_timeout_cuts_off_then_resumes(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The stream's key is overwritten with a string: every hub says WRONGTYPE (log, stats),
    RESETs after the 2 s --bridge-timeout saying so, and its workers are cut off; once the key
    is deleted the restarted workers meet again and a round flows between the hubs, in one
    order. One RESET each: no loop."""
    async with AsyncExitStack() as stack:
        admin = await stack.enter_async_context(coredis.Redis.from_url(redis.url))
        hubs = await open_hubs(stack, [redis.url] * HUBS, tmp_path, bridge_timeout=2.0)
        with trio.fail_after(60):
            key = f"stereo:{(await bridge_stats(hubs[0]))['name']}"
            start = marks(hubs)
            await admin.set(key, "not a stream")
            try:
                await said_once(hubs, start, WRONGTYPE)
                for hub, mark in zip(hubs, start, strict=True):
                    [reset] = await hub.stereo.wait_for(r"^\[bridge\] RESET: (.*)$", 1, mark)
                    assert reset[1].startswith(
                        f"the broker refused for over 2 s: redis answered: {WRONGTYPE}"
                    )
                    await hub.stereo.wait_for(
                        r"^\[stereo\] worker \d+ \(pid \d+\) exited: cut off: the broker bridge"
                        r" reset this hub: the broker refused for over 2 s",
                        WORKERS_PER_HUB,
                        mark,
                    )
            finally:
                await admin.delete([key])
            await all_here(hubs, start)
            after = marks(hubs)
            await hubs[1].go(2)
            await round_results(hubs, 2, after)
            for hub, mark in zip(hubs, start, strict=True):
                assert (await bridge_stats(hub))["broker_error"] is None
                assert times_said(hub, mark, WRONGTYPE) == 1
                assert (await bridge_stats(hub))["resets"] == 1
        assert len(resets(hubs, start)) == HUBS
        await stop_hubs(hubs)
