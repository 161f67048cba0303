"""The C relay (stereo/master/_relay.c) on its own: real socketpairs, its own thread, no master.

Each test drives the Relay object the way cplane.py does and reads what the peers receive; the
waits are bounded (select on the relay's eventfd, socket timeouts), never sleeps.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import ctl, open_stereo

from stereo.master import cplane
from stereo.snapshot import MESSAGE_SIZE_BUCKETS
from stereo.wire.framing import encode_frame
from stereo.wire.protocol import (
    BROADCAST_HEADER,
    HubIngress,
    Kind,
    encode_broadcast,
    max_body_size,
)

pytestmark = pytest.mark.skipif(not cplane.available(), reason="the C relay is not built")

MAX_MESSAGE = 1000
MAX_LENGTH = max_body_size(MAX_MESSAGE) + 1
WAIT = 10.0
CONTROL, ERROR, ENDED, SLOW = 1, 2, 3, 4


def broadcast(payload: bytes) -> bytes:
    return encode_broadcast(payload, MAX_MESSAGE)


def direct(target: int, payload: bytes) -> bytes:
    return encode_frame(Kind.DIRECT, target.to_bytes(4, "big") + payload)


class Harness:
    """A relay plus the far ends of its peers' sockets."""

    def __init__(self) -> None:
        self.relay: Any = cplane._relay.Relay(MAX_LENGTH, MESSAGE_SIZE_BUCKETS)  # type: ignore[union-attr]
        self.ends: dict[int, socket.socket] = {}
        self.events: list[tuple[Any, ...]] = []

    def add(
        self, peer_id: int, *, member: bool = True, limit: int = 1 << 20, initial: bytes = b""
    ) -> socket.socket:
        ours, theirs = socket.socketpair()
        theirs.settimeout(WAIT)
        # The relay dup()s the fd; ours may close at once, as the hub's would not, to show it.
        self.relay.add(peer_id, ours.fileno(), peer_id, 100 + peer_id, member, limit, initial)
        ours.close()
        self.ends[peer_id] = theirs
        return theirs

    def receive(self, peer_id: int, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.ends[peer_id].recv(size - len(data))
            assert chunk, f"peer {peer_id} saw EOF after {len(data)} of {size} bytes"
            data += chunk
        return data

    def nothing_for(self, peer_id: int) -> None:
        """Nothing is waiting for this peer (checked after something later has arrived)."""
        end = self.ends[peer_id]
        end.setblocking(False)
        with pytest.raises(BlockingIOError):
            end.recv(1)
        end.settimeout(WAIT)

    def event(self) -> tuple[Any, ...]:
        while not self.events:
            readable, _, _ = select.select([self.relay.fileno()], [], [], WAIT)
            assert readable, "no event from the relay"
            self.events.extend(self.relay.take_events())
        return self.events.pop(0)

    def close(self) -> None:
        self.relay.close()
        for end in self.ends.values():
            end.close()


@pytest.fixture
def hub() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def stamps(data: bytes) -> list[tuple[int, int, bytes]]:
    """(seq, sender, payload) of each BROADCAST frame in data."""
    out = []
    offset = 0
    while offset < len(data):
        length, kind, seq, sender = BROADCAST_HEADER.unpack_from(data, offset)
        assert kind == Kind.BROADCAST
        out.append((seq, sender, data[offset + 17 : offset + 4 + length]))
        offset += 4 + length
    return out


def test_order_stamps_and_members_only(hub: Harness) -> None:
    a, b = hub.add(1), hub.add(2)
    pool = hub.add(3, member=False)
    frames = [broadcast(bytes([i]) * (i + 1)) for i in range(5)]
    stream = b"".join(frames)
    for cut in range(0, len(stream), 7):  # partial frames across writes
        a.sendall(stream[cut : cut + 7])
    size = len(stream)
    got_a, got_b = hub.receive(1, size), hub.receive(2, size)
    assert got_a == got_b
    assert stamps(got_a) == [(i + 1, 1, bytes([i]) * (i + 1)) for i in range(5)]
    b.sendall(broadcast(b"from b"))
    assert stamps(hub.receive(1, 23)) == [(6, 2, b"from b")]
    assert hub.relay.broadcast(broadcast(b"master")) == 7
    assert stamps(hub.receive(2, 23 + 23)) == [(6, 2, b"from b"), (7, 0, b"master")]
    # The pool process got none of it: its first bytes are the DIRECT frame sent to it now.
    a.sendall(direct(103, b"job"))
    assert hub.receive(3, 12) == direct(101, b"job")  # the sender's address stamped in
    hub.nothing_for(3)
    stats = hub.relay.statistics()
    assert stats[:3] == (7, 14, len(stream) + 23 + 12)  # broadcasts, deliveries, bytes in
    assert stats[5] == 8  # next seq
    assert hub.relay.peer_statistics(1)[:2] == (5, 7)  # messages in, messages out
    assert pool is not None


def test_direct_bounces_for_unknown_or_not_accepting(hub: Harness) -> None:
    a = hub.add(1)
    hub.add(3, member=False)
    a.sendall(direct(999, b"x") + direct(103, b"y") + direct(999, b"z"))
    bounced = encode_frame(Kind.BOUNCED, (999).to_bytes(4, "big") + b"x")
    # Grouped by target in order of first appearance, as PoolRoutes.relay_all does.
    assert hub.receive(1, 20) == bounced + bounced[:-1] + b"z"
    assert hub.receive(3, 10) == direct(101, b"y")
    hub.relay.accepting(3, False)
    a.sendall(direct(103, b"late"))
    assert hub.receive(1, 13) == encode_frame(Kind.BOUNCED, (103).to_bytes(4, "big") + b"late")


BAD_FRAMES = [
    pytest.param(struct.pack(">IB", 0, 5), id="length-0"),
    pytest.param(struct.pack(">IB", MAX_LENGTH + 1, 5), id="too-long"),
    pytest.param(struct.pack(">I", MAX_LENGTH + 1), id="too-long-prefix-only"),
    pytest.param(encode_frame(Kind.BROADCAST, b"short"), id="short-broadcast"),
    pytest.param(encode_frame(Kind.DIRECT, b"ab"), id="short-direct"),
    pytest.param(encode_frame(Kind.WELCOME, b"\xa0"), id="welcome"),
    pytest.param(encode_frame(0x77, b""), id="unknown-kind"),
]


@pytest.mark.parametrize("bad", BAD_FRAMES)
def test_protocol_errors_read_as_hubingress_words_them(hub: Harness, bad: bytes) -> None:
    a, _ = hub.add(1), hub.add(2)
    good = broadcast(b"before")
    a.sendall(good + bad + broadcast(b"after"))
    event = hub.event()
    assert event[:2] == (ERROR, 1)
    ingress = HubIngress(1, MAX_MESSAGE)
    ingress.receive_data(good + bad + broadcast(b"after"))
    expected = ingress.events(1)[0][-1]
    assert str(cplane.refusal(*event[2:], MAX_LENGTH)) == str(expected)
    # The run before the bad frame was relayed, nothing after it.
    assert stamps(hub.receive(2, len(good))) == [(1, 1, b"before")]
    hub.nothing_for(2)
    hub.relay.cut_off(1)
    assert hub.relay.statistics()[5] == 2  # no sequence number used after the bad frame
    assert stamps(hub.receive(1, len(good))) == [(1, 1, b"before")]  # its own, then the end
    assert a.recv(10) == b""  # cut off: its connection is closed


def test_control_frame_parks_the_peer_until_answered(hub: Harness) -> None:
    a, _ = hub.add(1), hub.add(2)
    heartbeat = encode_frame(Kind.HEARTBEAT)
    assert not hub.relay.parked(1)
    a.sendall(broadcast(b"one") + heartbeat + broadcast(b"two"))
    assert hub.event() == (CONTROL, 1, Kind.HEARTBEAT, b"")
    # Read by the relay, not yet handled by trio: what the watchdog counts as unread evidence.
    assert hub.relay.parked(1) and not hub.relay.parked(2)
    assert stamps(hub.receive(2, 20)) == [(1, 1, b"one")]
    hub.relay.broadcast(broadcast(b"master"))  # others go on meanwhile
    assert stamps(hub.receive(2, 23)) == [(2, 0, b"master")]
    hub.relay.resume(1)
    assert not hub.relay.parked(1)
    assert stamps(hub.receive(2, 20)) == [(3, 1, b"two")]


def test_slow_consumer_is_cut_off_at_the_limit(hub: Harness) -> None:
    a = hub.add(1)
    limit = 4096
    slow = hub.add(2, limit=limit)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = broadcast(b"x" * 900)
    sent = 0
    while not hub.events:
        a.sendall(frame)
        sent += 1
        hub.receive(1, len(frame))  # the fast one keeps up
        hub.events.extend(hub.relay.take_events())
        assert sent < 10_000, "never cut off"
    kind, peer_id, pending, reported_limit, cause = hub.event()
    assert (kind, peer_id, reported_limit, cause) == (SLOW, 2, limit, 0)
    assert limit < pending <= limit + len(frame)
    a.sendall(frame)
    hub.receive(1, len(frame))  # the relay goes on for the others
    assert hub.relay.peer_statistics(2)[4] == 0  # its queue was dropped


def test_eof_inside_a_frame_reports_the_truncated_bytes(hub: Harness) -> None:
    a = hub.add(1, initial=broadcast(b"early")[:3])
    a.sendall(broadcast(b"early")[3:] + broadcast(b"cut")[:7])
    assert stamps(hub.receive(1, 22)) == [(1, 1, b"early")]
    a.shutdown(socket.SHUT_WR)
    assert hub.event() == (ENDED, 1, 7, 0, 0)
    final = hub.relay.remove(1)
    assert final[0] == 1 and hub.relay.remove(1) is None


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_close_joins_the_thread_and_leaks_nothing() -> None:
    fds, threads = _fds(), _threads()
    for _ in range(20):
        harness = Harness()
        a = harness.add(1)
        harness.add(2)
        a.sendall(broadcast(b"hi"))
        harness.receive(2, 19)
        assert _threads() == threads + 1
        harness.close()
        assert _threads() == threads
        with pytest.raises(ValueError, match="closed"):
            harness.relay.broadcast(broadcast(b"late"))
    assert _fds() == fds


async def test_the_master_relays_on_the_plane_asked_for(relay_plane: str, tmp_path: Path) -> None:
    control = str(tmp_path / "ctl.sock")
    env = {"ORDER_WORKERS": "2", "ORDER_COUNT": "50"}
    with trio.fail_after(60):
        async with open_stereo("order:serve", "-w", "2", "--control", control, env=env) as stereo:
            results = await stereo.wait_for(r"^\[worker (\d+)\] RESULT (.*)$", count=2)
            assert results[0][2] == results[1][2]  # one order
            code, out, err = await ctl("--control", control, "stats", "--json")
            assert (code, err) == (0, "")
            stats = json.loads(out)
            assert stats["relay"] == relay_plane
            assert stats["broadcasts"] >= 100 and stats["next_seq"] == stats["broadcasts"] + 1
            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0


def test_the_plane_is_c_unless_bridged_or_asked_for_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEREO_RELAY", raising=False)
    assert cplane.relay_plane(bridged=False) == "c"
    assert cplane.relay_plane(bridged=True) == "python"  # only hub.py speaks to a broker
    monkeypatch.setenv("STEREO_RELAY", "python")
    assert cplane.relay_plane(bridged=False) == "python"
    monkeypatch.setenv("STEREO_RELAY", "c")
    assert cplane.relay_plane(bridged=False) == "c"


@pytest.mark.parametrize("pure", [False, True])
def test_accelerations_report_each_part(pure: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STEREO_PURE_PYTHON"}
    if pure:
        env["STEREO_PURE_PYTHON"] = "1"
    code = "import stereo; print(sorted(stereo.accelerations().items()), stereo.accelerated())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    built = not pure  # both extensions build wherever the relay does (this module's skip)
    assert out.strip() == f"[('intake', {built}), ('relay', {built})] {built}"


def test_the_relay_thread_blocks_signals_so_they_reach_pythons_thread() -> None:
    before = set(os.listdir("/proc/self/task"))
    harness = Harness()
    try:
        (tid,) = set(os.listdir("/proc/self/task")) - before
        # Something only its loop does, so that it runs with its own mask (not the one a new
        # thread starts with).
        harness.add(1).sendall(broadcast(b"ping"))
        harness.receive(1, 21)
        status = Path(f"/proc/self/task/{tid}/status").read_text()
        blocked = int(
            next(line for line in status.splitlines() if line.startswith("SigBlk:"))[7:], 16
        )
        for signum in (
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGUSR2,
            signal.SIGCHLD,
        ):
            assert blocked & (1 << (signum - 1)), signum.name
    finally:
        harness.close()
