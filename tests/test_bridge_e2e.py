"""Two hubs (two `stereo run` masters) bridged through a private redis-server: one order, with
the same msg.seq, on every worker of every hub; a bridge process killed again and again loses
and duplicates nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import psutil
import trio
from conftest import Stereo, ctl, open_stereo
from test_bridge_redis import RedisServer, redis  # noqa: F401  (the fixture)

WORKERS_PER_HUB = 2


async def open_hubs(
    stack: AsyncExitStack, server: RedisServer, tmp_path: Path, count: int, messages: int
) -> list[Stereo]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = {"ORDER_WORKERS": str(2 * WORKERS_PER_HUB), "ORDER_COUNT": str(messages)}
    hubs = []
    for index in range(2):
        hubs.append(
            await stack.enter_async_context(
                open_stereo(
                    "bridge_order:serve",
                    "-w",
                    str(WORKERS_PER_HUB),
                    "--bridge",
                    server.url,
                    "--bridge-name",
                    name,
                    "--control",
                    str(tmp_path / f"hub{index}" / "stereo.sock"),
                    env=env,
                )
            )
        )
    assert count == len(hubs)
    return hubs


async def results(hubs: list[Stereo]) -> list[dict[str, object]]:
    found = []
    for hub in hubs:
        for match in await hub.wait_for(r"^\[worker \d+\] RESULT (.*)$", count=WORKERS_PER_HUB):
            found.append(json.loads(match[1]))
    return found


def check_one_order(summaries: list[dict[str, object]]) -> None:
    """Every worker of every hub saw the same (seq, sender, n) list (its digest), seqs only
    growing, every sender's messages once each in the order sent (the app checks)."""
    assert len(summaries) == 2 * WORKERS_PER_HUB
    assert len({summary["digest"] for summary in summaries}) == 1
    for summary in summaries:
        assert summary["increasing"] is True
        assert summary["each_in_order"] is True
        assert summary["senders"] == 2 * WORKERS_PER_HUB


async def test_two_hubs_share_one_order_with_the_same_seqs(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    messages = 200
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, redis, tmp_path, 2, messages)
        with trio.fail_after(60):
            lists = await results(hubs)
        check_one_order(lists)
        # The console and ctl show each hub's link to the broker.
        control = str(tmp_path / "hub0" / "stereo.sock")
        code, out, err = await ctl("--control", control, "stats", "--json")
        assert (code, err) == (0, "")
        bridge = json.loads(out)["bridge"]
        assert bridge["url"] == redis.url and bridge["connected"] is True
        assert bridge["batches_out"] > 0 and bridge["entries_in"] > 0
        assert bridge["next_seq"] > messages * 2 * WORKERS_PER_HUB  # past every data message
        assert (bridge["resets"], bridge["pending_batches"]) == (0, 0)
        code, out, _ = await ctl("--control", control, "stats")
        assert code == 0 and f"bridge      {redis.url} " in out and ": connected, next seq" in out
        for hub in hubs:
            hub.signal(signal.SIGTERM)
        with trio.fail_after(30):
            for hub in hubs:
                assert await hub.wait() == 0


def bridge_pid(hub: Stereo) -> int | None:
    for child in hub.children():
        try:
            if "stereo.bridge" in child.cmdline():
                return child.pid
        except psutil.NoSuchProcess:
            pass
    return None


async def test_a_bridge_killed_again_and_again_loses_and_duplicates_nothing(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    messages = 20_000
    kills_before_results = 0
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, redis, tmp_path, 2, messages)
        with trio.fail_after(120):
            # The storm begins once every worker has heard from every other.
            await hubs[0].wait_for(r"^\[worker \d+\] all here$", count=WORKERS_PER_HUB)
            for _ in range(3):
                for hub in hubs:
                    mark = len(hub.lines)
                    pid = bridge_pid(hub)
                    if pid is None:
                        continue
                    os.kill(pid, signal.SIGKILL)
                    await hub.wait_for(r"bridge exited: killed by SIGKILL", start=mark)
                    if not finished(hubs):  # the kill landed in the storm
                        kills_before_results += 1
            lists = await results(hubs)
    assert kills_before_results >= 2
    check_one_order(lists)


def finished(hubs: list[Stereo]) -> bool:
    return any(re.search(r"\] RESULT ", line) for hub in hubs for line in hub.lines)


async def test_a_stopping_hub_hands_its_workers_last_broadcasts_to_the_broker(
    redis: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    common = ("bridge_lastword:serve", "-w", "1", "--bridge", redis.url, "--bridge-name", name)
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(
            open_stereo(
                *common,
                "--control",
                str(tmp_path / "r" / "s.sock"),
                env={"LASTWORD_ROLE": "receiver"},
            )
        )
        sender = await stack.enter_async_context(
            open_stereo(
                *common,
                "--control",
                str(tmp_path / "s" / "s.sock"),
                env={"LASTWORD_ROLE": "sender"},
            )
        )
        with trio.fail_after(60):
            await sender.wait_for(r"^\[worker 1\] sent$")
            sender.signal(signal.SIGTERM)  # at once: most of it may still be on its way
            assert await sender.wait() == 0
            await receiver.wait_for(r"^\[worker 1\] got all$")
