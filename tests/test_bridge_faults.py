"""Broker faults under real bridged hubs (docs/scale-out.md, "Faults"): two `stereo run` masters
bridged through a private broker (redis-server, or nats-server -js: every test runs over both
but where a fault exists for one only) that is restarted with or without its store, paused past
or within --bridge-timeout, outrun by the retention window, or reached over veth links in
network namespaces that are cut, delayed and lossy.

The app (tests/apps/bridge_faults.py) broadcasts in rounds the test starts with a console
broadcast, so a fault is held in the middle of a round; after a RESET the restarted workers meet
again and a new round shows that broadcasts flow between the hubs. Waits are on output lines
and process exits, under trio.fail_after; a trio.sleep appears only where a fault is held.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import psutil
import pytest
import trio
from bridge_brokers import NATS, REDIS, Broker, open_broker
from conftest import Stereo, ctl, open_stereo
from test_bridge_e2e import bridge_pid
from test_bridge_redis import LEAKED_BY_FAILED_CONNECT

pytestmark = pytest.mark.filterwarnings(LEAKED_BY_FAILED_CONNECT)


@pytest.fixture(params=[REDIS, NATS])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    async with open_broker(request.param, tmp_path) as server:
        yield server


WORKERS_PER_HUB = 2
HUBS = 2
COUNT = 60
PACE = 0.02  # a round lasts about COUNT * PACE seconds: long enough to hold a fault inside it
RESET = r"^\[bridge\] RESET: (.*)$"


class Hub:
    """One bridged `stereo run` and its control socket."""

    def __init__(self, stereo: Stereo, control: Path) -> None:
        self.stereo = stereo
        self.control = control

    async def go(self, round_: int) -> None:
        """Start a round on every worker of every hub (a console broadcast, ordered by the
        broker like any other)."""
        code, out, err = await ctl("--control", str(self.control), "broadcast", f'["go", {round_}]')
        assert code == 0, (out, err)


async def open_hubs(
    stack: AsyncExitStack,
    urls: list[str],
    tmp_path: Path,
    *,
    bridge_timeout: float = 30.0,
    retention: int = 100_000,
    prefixes: list[tuple[str, ...]] | None = None,
) -> list[Hub]:
    """HUBS bridged hubs on one stream (hub i reaches the broker at ``urls[i]``), once every
    worker of every hub has met every other."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    env = {
        "FAULT_WORKERS": str(HUBS * WORKERS_PER_HUB),
        "FAULT_COUNT": str(COUNT),
        "FAULT_PACE": str(PACE),
    }
    hubs = []
    for index in range(HUBS):
        control = tmp_path / f"hub{index}" / "stereo.sock"
        stereo = await stack.enter_async_context(
            open_stereo(
                "bridge_faults:serve",
                "-w",
                str(WORKERS_PER_HUB),
                "--bridge",
                urls[index],
                "--bridge-name",
                name,
                "--bridge-timeout",
                str(bridge_timeout),
                "--bridge-retention",
                str(retention),
                "--control",
                str(control),
                env=env,
                prefix=prefixes[index] if prefixes else (),
            )
        )
        hubs.append(Hub(stereo, control))
    stack.callback(show, hubs)
    with trio.fail_after(20):
        await all_here(hubs, [0] * HUBS)
    return hubs


def show(hubs: list[Hub]) -> None:
    """The hubs' lines but the app's per-message ones (pytest shows them if the test fails)."""
    for index, hub in enumerate(hubs):
        print(f"---- hub {index} ----")
        for line in hub.stereo.lines:
            if not re.match(r"^\[worker \d+\] (got|late) ", line):
                print(line)


def marks(hubs: list[Hub]) -> list[int]:
    """Where each hub's output stands: what comes after is new."""
    return [len(hub.stereo.lines) for hub in hubs]


async def all_here(hubs: list[Hub], start: list[int]) -> None:
    for hub, mark in zip(hubs, start, strict=True):
        await hub.stereo.wait_for(r"^\[worker \d+\] all here$", WORKERS_PER_HUB, mark)


async def round_results(hubs: list[Hub], round_: int, start: list[int]) -> None:
    """Wait for every worker's RESULT of ``round_`` and check that they are one order: the same
    (seq, sender, n) list everywhere, seqs growing, each sender's messages once each, in order."""
    pattern = rf"^\[worker \d+\] RESULT (.*\"round\": {round_}\b.*)$"
    summaries = []
    for hub, mark in zip(hubs, start, strict=True):
        for match in await hub.stereo.wait_for(pattern, WORKERS_PER_HUB, mark):
            summaries.append(json.loads(match[1]))
    assert len({summary["digest"] for summary in summaries}) == 1, summaries
    for summary in summaries:
        assert summary["increasing"] is True
        assert summary["each_in_order"] is True
        assert summary["senders"] == HUBS * WORKERS_PER_HUB


def check_prefixes(hubs: list[Hub], round_: int) -> int:
    """What each worker that took part in ``round_`` from its go received of it (its `got`
    lines) is a prefix of one order, with no sender's message missing or twice in it: nothing
    was skipped or duplicated before the fault cut the workers off. Returns the longest."""
    got = re.compile(rf"^\[worker \d+\] got {round_} (\d+) (\d+) (\d+) (\d+)$")
    lists: dict[int, list[tuple[int, int, int]]] = {}
    for hub in hubs:
        for line in hub.stereo.lines:
            if match := got.match(line):
                seq, sender, n, receiver = map(int, match.groups())
                lists.setdefault(receiver, []).append((seq, sender, n))
    assert lists, "no worker received anything of the round before the fault"
    longest = max(lists.values(), key=len)
    for received in lists.values():
        assert received == longest[: len(received)]
    per_sender: dict[int, list[int]] = {}
    for _, sender, n in longest:
        per_sender.setdefault(sender, []).append(n)
    for numbers in per_sender.values():
        assert numbers == list(range(len(numbers)))
    seqs = [seq for seq, _, _ in longest]
    assert seqs == sorted(set(seqs))
    return len(longest)


async def reset_and_restart(hubs: list[Hub], start: list[int], reason: str) -> None:
    """Each hub logs a RESET whose reason matches ``reason``, its workers are cut off saying so,
    and the restarted workers meet every worker again."""
    for hub, mark in zip(hubs, start, strict=True):
        [match] = await hub.stereo.wait_for(RESET, 1, mark)
        assert re.search(reason, match[1]), match[1]
        await hub.stereo.wait_for(
            r"^\[stereo\] worker \d+ \(pid \d+\) exited: cut off: the broker bridge reset this"
            r" hub: ",
            WORKERS_PER_HUB,
            mark,
        )
    await all_here(hubs, start)


async def stop_hubs(hubs: list[Hub]) -> None:
    for hub in hubs:
        hub.stereo.signal(signal.SIGTERM)
    with trio.fail_after(20):
        for hub in hubs:
            assert await hub.stereo.wait() == 0


def resets(hubs: list[Hub], start: list[int]) -> list[str]:
    return [
        line
        for hub, mark in zip(hubs, start, strict=True)
        for line in hub.stereo.lines[mark:]
        if re.match(RESET, line)
    ]


async def test_a_broker_restarted_empty_is_a_gap_and_every_hub_resets(
    broker: Broker,
    tmp_path: Path,
) -> None:
    """A broker that lost its store (a Redis without persistence, a JetStream on a fresh disk)
    comes back empty: a new stream. Until then broadcasts wait; what was delivered before is a
    gap-free prefix of one order; then every hub sees the new stream as a gap (Redis: its
    counter behind the hub, or another epoch; JetStream: the stream gone, or created anew) and
    RESETs, and the restarted workers broadcast to each other through the new stream."""
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, [broker.url] * HUBS, tmp_path)
        with trio.fail_after(40):
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[0].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[0])
            await broker.stop()
            broker.wipe()
            await trio.sleep(1.0)  # the fault, held: the broker is away for a second
            await broker.start()
            await reset_and_restart(hubs, start, broker.recreated)
            assert check_prefixes(hubs, 1) > 0
            after = marks(hubs)
            await hubs[1].go(2)
            await round_results(hubs, 2, after)
            assert len(resets(hubs, start)) == HUBS  # one each: no RESET loop
        await stop_hubs(hubs)


@pytest.mark.parametrize("broker", [NATS], indirect=True)  # the tests' Redis keeps no store
async def test_a_broker_restarted_with_its_store_loses_and_duplicates_nothing(
    broker: Broker,
    tmp_path: Path,
) -> None:
    """A JetStream stopped in the middle of a round and started again on its store: the bridges
    reconnect and resume from their positions; batches whose acknowledgement the stop cut off
    are resent and dropped as appended (idempotent), so the round completes in one order with
    nothing lost or twice, and nobody resets."""
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, [broker.url] * HUBS, tmp_path)
        with trio.fail_after(40):
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[1].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[1])
            await broker.stop()
            # The stop landed in the round: every sender paces it over more than a second.
            assert not [line for hub in hubs for line in hub.stereo.lines if " RESULT " in line]
            await trio.sleep(1.0)  # the fault, held: the broker is away for a second
            await broker.start()
            await round_results(hubs, 1, start)
        assert resets(hubs, start) == []
        await stop_hubs(hubs)


async def test_a_broker_paused_within_the_timeout_loses_and_duplicates_nothing(
    broker: Broker,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, [broker.url] * HUBS, tmp_path, bridge_timeout=5.0)
        with trio.fail_after(30):
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[0].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[0])
            broker.signal(signal.SIGSTOP)
            try:
                await trio.sleep(1.5)  # the fault, held: well within the 5 s timeout
            finally:
                broker.signal(signal.SIGCONT)
            await round_results(hubs, 1, start)
        assert resets(hubs, start) == []
        await stop_hubs(hubs)


async def test_a_broker_paused_past_the_timeout_resets_every_hub(
    broker: Broker,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, [broker.url] * HUBS, tmp_path, bridge_timeout=2.0)
        with trio.fail_after(40):
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[0].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[0])
            broker.signal(signal.SIGSTOP)
            try:
                # The fault, held past the 2 s timeout; the RESET comes while it lasts.
                await trio.sleep(4.0)
            finally:
                broker.signal(signal.SIGCONT)
            await reset_and_restart(hubs, start, r"unreachable for over 2 s")
            assert check_prefixes(hubs, 1) > 0
            after = marks(hubs)
            await hubs[0].go(2)
            await round_results(hubs, 2, after)
            assert len(resets(hubs, start)) == HUBS  # one each: no RESET loop
        await stop_hubs(hubs)


async def test_a_hub_behind_the_retention_window_resets_and_never_skips(
    broker: Broker,
    tmp_path: Path,
) -> None:
    """Hub 1's bridge is frozen while hub 0's workers broadcast far more entries than the
    stream keeps (MAXLEN ~ trims whole nodes of 100 entries: a round of paced broadcasts is
    hundreds of entries); thawed, it finds its position trimmed: a gap, so a RESET."""
    async with AsyncExitStack() as stack:
        hubs = await open_hubs(stack, [broker.url] * HUBS, tmp_path, retention=10)
        with trio.fail_after(40):
            start = marks(hubs)
            pid = bridge_pid(hubs[1].stereo)
            assert pid is not None
            frozen = psutil.Process(pid)
            frozen.suspend()
            try:
                # Hub 1 never hears the go: only hub 0's workers broadcast, all of it.
                await hubs[0].go(1)
                await hubs[0].stereo.wait_for(
                    rf"^\[worker \d+\] got 1 \d+ \d+ {COUNT - 1} \d+$",
                    2 * WORKERS_PER_HUB,
                    start[0],
                )
            finally:
                frozen.resume()
            await reset_and_restart(hubs[1:], start[1:], broker.trimmed)
            assert resets(hubs[:1], start[:1]) == []
            # Whatever hub 1 delivered of round 1 (entries its frozen read may already have
            # held) is a gap-free prefix of hub 0's order: nothing skipped.
            check_prefixes(hubs, 1)
            after = marks(hubs)
            await hubs[1].go(2)
            await round_results(hubs, 2, after)
            assert len(resets(hubs, start)) == 1  # hub 1 once; hub 0 never
        await stop_hubs(hubs)


# -- hubs on separate "hosts": network namespaces joined by veth pairs ----------------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_unavailable() -> str | None:
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"stb-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        return f"`ip netns add` fails here (not root, or no CAP_SYS_ADMIN): {stderr!r}"
    ip("netns", "del", probe)
    try:
        subprocess.run(["tc", "qdisc", "show"], check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`tc` does not work here: {exc}"
    return None


@contextmanager
def two_hosts() -> Iterator[tuple[str, str, str]]:
    """A broker "host" (namespace B) and a hub "host" (namespace H) joined by a veth pair
    (10.77.0.1 on B, 10.77.0.2 on H), and the root namespace joined to B by another
    (10.78.0.1 on B, 10.78.0.2 here). Yields (B, H, the veth H's traffic leaves by);
    everything is deleted at the end, whatever happened."""
    tag = uuid.uuid4().hex[:6]
    broker, hub = f"stb-b-{tag}", f"stb-h-{tag}"
    # Interface names are at most 15 characters.
    bh, hb, br, rb = f"vbh{tag}", f"vhb{tag}", f"vbr{tag}", f"vrb{tag}"
    created: list[str] = []
    try:
        for ns in (broker, hub):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", hb, "netns", hub, "type", "veth", "peer", "name", bh, "netns", broker)
        ip("link", "add", rb, "type", "veth", "peer", "name", br, "netns", broker)
        ip("-n", broker, "addr", "add", "10.77.0.1/24", "dev", bh)
        ip("-n", hub, "addr", "add", "10.77.0.2/24", "dev", hb)
        ip("-n", broker, "addr", "add", "10.78.0.1/24", "dev", br)
        ip("addr", "add", "10.78.0.2/24", "dev", rb)
        for ns, dev in ((broker, bh), (hub, hb), (broker, br)):
            ip("-n", ns, "link", "set", dev, "up")
        ip("link", "set", rb, "up")
        yield broker, hub, hb
    finally:
        # Deleting a namespace deletes its veths, and with them their peers.
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", rb], capture_output=True, timeout=10)


# Sync fixtures: a skip raised inside a trio test loses its reason, and this one must be seen.
@pytest.fixture
def hosts() -> Iterator[tuple[str, str, str]]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"NETWORK NAMESPACE TEST NOT RUN: {reason}")
    with two_hosts() as names:
        yield names


def netem_unavailable(namespace: str, device: str) -> str | None:
    """Whether `tc netem` works (it needs the sch_netem qdisc in the kernel)."""
    tc = ["ip", "netns", "exec", namespace, "tc", "qdisc"]
    added = subprocess.run(
        [*tc, "add", "dev", device, "root", "netem", "delay", "1ms"],
        capture_output=True,
        timeout=10,
    )
    if added.returncode != 0:
        return f"`tc qdisc add ... netem` fails here: {added.stderr.decode().strip()!r}"
    subprocess.run([*tc, "del", "dev", device, "root"], check=True, timeout=10)
    return None


async def open_hosted_hubs(
    stack: AsyncExitStack,
    kind: str,
    hosts: tuple[str, str, str],
    tmp_path: Path,
    bridge_timeout: float,
) -> list[Hub]:
    """A private broker on the broker "host", hub 0 here and hub 1 on the hub "host"."""
    broker_ns, hub_ns, _ = hosts
    # Closed after the hubs, which the stack closes first.
    server = await stack.enter_async_context(
        open_broker(kind, tmp_path, host="0.0.0.0", prefix=("ip", "netns", "exec", broker_ns))
    )
    port = server.url.rsplit(":", 1)[1]  # with redis's "/0"
    return await open_hubs(
        stack,
        [f"{kind}://10.78.0.1:{port}", f"{kind}://10.77.0.1:{port}"],
        tmp_path,
        bridge_timeout=bridge_timeout,
        prefixes=[(), ("ip", "netns", "exec", hub_ns)],
    )


@pytest.mark.parametrize("kind", [REDIS, NATS])
async def test_hubs_on_separate_hosts_survive_a_short_cut_and_reset_after_a_long_one(
    kind: str, hosts: tuple[str, str, str], tmp_path: Path
) -> None:
    _, hub_ns, link = hosts
    async with AsyncExitStack() as stack:
        hubs = await open_hosted_hubs(stack, kind, hosts, tmp_path, bridge_timeout=3.0)
        with trio.fail_after(40):
            # A cut shorter than the timeout, in the middle of a round: healed, the round
            # completes in one order, and nobody reset.
            start = marks(hubs)
            await hubs[0].go(1)
            await hubs[1].stereo.wait_for(r"^\[worker \d+\] got 1 ", 1, start[1])
            ip("-n", hub_ns, "link", "set", link, "down")
            try:
                await trio.sleep(1.0)  # the fault, held: the link is cut for a second
            finally:
                ip("-n", hub_ns, "link", "set", link, "up")
            await round_results(hubs, 1, start)
            assert resets(hubs, start) == []
            # A cut longer than the timeout: the cut-off hub resets, the other does not, and
            # once healed, broadcasts flow between them again.
            start2 = marks(hubs)
            ip("-n", hub_ns, "link", "set", link, "down")
            try:
                await trio.sleep(5.0)  # the fault, held past the 3 s timeout
            finally:
                ip("-n", hub_ns, "link", "set", link, "up")
            await reset_and_restart(hubs[1:], start2[1:], r"unreachable for over 3 s")
            assert resets(hubs[:1], start2[:1]) == []
            start3 = marks(hubs)
            await hubs[0].go(3)
            await round_results(hubs, 3, start3)
            assert len(resets(hubs, start2)) == 1  # hub 1 once; hub 0 never
        await stop_hubs(hubs)


@pytest.fixture
def netem(hosts: tuple[str, str, str]) -> tuple[str, str, str]:
    reason = netem_unavailable(hosts[1], hosts[2])
    if reason is not None:
        pytest.skip(f"DELAY AND LOSS NOT TESTED: {reason}")
    return hosts


@pytest.mark.parametrize("kind", [REDIS, NATS])
async def test_hubs_on_separate_hosts_with_delay_and_loss_lose_and_duplicate_nothing(
    kind: str, netem: tuple[str, str, str], tmp_path: Path
) -> None:
    hosts = netem
    _, hub_ns, link = hosts
    async with AsyncExitStack() as stack:
        hubs = await open_hosted_hubs(stack, kind, hosts, tmp_path, bridge_timeout=3.0)
        tc = ("netns", "exec", hub_ns, "tc", "qdisc")
        ip(*tc, "add", "dev", link, "root", "netem", "delay", "20ms", "loss", "1%")
        with trio.fail_after(40):
            start = marks(hubs)
            await hubs[1].go(1)
            await round_results(hubs, 1, start)
        assert resets(hubs, start) == []
        ip(*tc, "del", "dev", link, "root")
        await stop_hubs(hubs)
