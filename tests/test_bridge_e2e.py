"""Two hubs (two `stereo run` masters) bridged through a private broker, redis-server (the trio
bridge) or nats-server -js (the asyncio bridge): one order, with the same msg.seq, on every
worker of every hub; a bridge process killed again and again loses and duplicates nothing."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import psutil
import pytest
import trio
from conftest import Stereo, ctl, open_stereo
from test_bridge_jetstream import NATS_SERVER, NatsServer
from test_bridge_redis import REDIS_SERVER, RedisServer

WORKERS_PER_HUB = 2


@pytest.fixture(
    params=[
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(not REDIS_SERVER.exists(), reason="no redis-server"),
        ),
        pytest.param(
            "nats",
            marks=pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="no nats-server"),
        ),
    ]
)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a private broker (never the shared ones on 6379 and 4222), stopped after."""
    if request.param == "redis":
        redis = RedisServer(tmp_path)
        with trio.fail_after(15):
            await redis.start()
        try:
            yield redis.url
        finally:
            with trio.CancelScope(shield=True):
                await redis.stop()
            gc.collect()  # see test_bridge_redis.LEAKED_BY_FAILED_CONNECT
    else:
        nats = NatsServer(tmp_path / "js")
        # Its start and stop block for at most 10 s each: in a thread, off the test's loop.
        await trio.to_thread.run_sync(nats.start)
        try:
            yield nats.url
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(nats.stop)


async def open_hubs(
    stack: AsyncExitStack, url: str, tmp_path: Path, count: int, messages: int
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
                    url,
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


def check_no_reset(hubs: list[Stereo]) -> None:
    """Neither a bridge's restart nor hubs starting together is a reason to cut workers off."""
    assert not [line for hub in hubs for line in hub.lines if "[bridge] RESET" in line]


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
    broker: str,
    tmp_path: Path,
) -> None:
    messages = 200
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, broker, tmp_path, 2, messages)
        with trio.fail_after(60):
            lists = await results(hubs)
        check_one_order(lists)
        check_no_reset(hubs)
        # The console and ctl show each hub's link to the broker.
        control = str(tmp_path / "hub0" / "stereo.sock")
        code, out, err = await ctl("--control", control, "stats", "--json")
        assert (code, err) == (0, "")
        bridge = json.loads(out)["bridge"]
        assert json.loads(out)["relay"] == "python"  # bridged: always the Python data plane
        assert bridge["url"] == broker and bridge["connected"] is True
        assert bridge["batches_out"] > 0 and bridge["entries_in"] > 0
        assert bridge["next_seq"] > messages * 2 * WORKERS_PER_HUB  # past every data message
        assert (bridge["resets"], bridge["pending_batches"]) == (0, 0)
        code, out, _ = await ctl("--control", control, "stats")
        assert code == 0 and f"bridge      {broker} " in out and ": connected, next seq" in out
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
    broker: str,
    tmp_path: Path,
) -> None:
    messages = 20_000
    kills_before_results = 0
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, broker, tmp_path, 2, messages)
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
        check_no_reset(hubs)
    assert kills_before_results >= 2
    check_one_order(lists)


def finished(hubs: list[Stereo]) -> bool:
    return any(re.search(r"\] RESULT ", line) for hub in hubs for line in hub.lines)


async def test_a_stopping_hub_hands_its_workers_last_broadcasts_to_the_broker(
    broker: str, tmp_path: Path
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    common = ("bridge_lastword:serve", "-w", "1", "--bridge", broker, "--bridge-name", name)
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
