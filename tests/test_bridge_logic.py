"""The bridge's decisions (stereo/bridge/logic.py), shared by its trio and asyncio drivers: no
loop, no broker, no process."""

from __future__ import annotations

import cbor2
import pytest

from stereo.bridge.broker import BrokerUnavailable, Entry, Gap
from stereo.bridge.logic import BACKOFF, BridgeLogic
from stereo.errors import ProtocolError
from stereo.wire.bridge import decode_deliver, encode_batch
from stereo.wire.framing import FrameReader
from stereo.wire.protocol import Kind, encode_broadcast

LIMIT = 1 << 20


def logic(next_seq: int | None = None, timeout: float = 30.0) -> BridgeLogic:
    welcome: dict[str, object] = {"hub_id": "hub", "timeout": timeout, "max_message_size": LIMIT}
    if next_seq is not None:
        welcome["next_seq"] = next_seq
    return BridgeLogic(welcome)


def entry(first: int, count: int) -> Entry:
    frames = b"".join(
        encode_broadcast(cbor2.dumps(i), LIMIT, seq=999, sender=7) for i in range(count)
    )
    return Entry(first, count, "other", 1, frames)


def frames_in(data: bytes) -> list[tuple[int, bytes]]:
    reader = FrameReader(LIMIT * 4)
    reader.append(data)
    return [(frame.kind, frame.body) for frame in reader.frames()]


def test_a_batch_frame_becomes_this_hubs_batch() -> None:
    body = frames_in(encode_batch(9, 2, b"xy"))[0][1]
    batch = logic().batch(Kind.BATCH, body)
    assert (batch.hub_id, batch.number, batch.count, batch.frames) == ("hub", 9, 2, b"xy")
    with pytest.raises(ProtocolError, match="HEARTBEAT"):
        logic().batch(Kind.HEARTBEAT, b"")


def test_the_broker_away_backs_off_and_resets_once_past_the_timeout() -> None:
    bridge = logic(next_seq=5, timeout=10.0)
    away = BrokerUnavailable("refused")
    first = bridge.unavailable(away, 0, now=100.0)
    assert first.delay == BACKOFF[0] and first.reset is None
    assert first.notes == ("broker unavailable (refused); retrying",)
    assert bridge.unavailable(away, 1, now=105.0).notes == ()
    assert bridge.unavailable(away, 50, now=110.0).delay == BACKOFF[-1]  # not yet past it
    past = bridge.unavailable(away, 51, now=110.5)
    assert past.reset is not None
    kind, body = frames_in(past.reset)[0]
    assert kind == Kind.RESET
    assert cbor2.loads(body) == {"reason": "the broker was unreachable for over 10 s"}
    assert bridge.next_seq is None  # back, it starts at the tail
    assert bridge.unavailable(away, 52, now=200.0).reset is None  # once
    assert bridge.available() == "broker reachable again"
    assert bridge.available() is None


def test_a_gap_resets_and_starts_at_the_tail() -> None:
    bridge = logic(next_seq=5)
    reset = bridge.gap(Gap(5, 9, "entries are missing"))
    assert reset.note.startswith("RESET: the broker's order has a gap")
    assert frames_in(reset.frame)[0][0] == Kind.RESET
    assert bridge.next_seq is None


def test_deliveries_restamp_entries_and_move_the_position() -> None:
    bridge = logic(next_seq=5)
    data = bridge.deliveries(5, [entry(5, 2), entry(7, 1)])
    delivered = [decode_deliver(body)[:2] for kind, body in frames_in(data)]
    assert [kind for kind, _ in frames_in(data)] == [Kind.DELIVER, Kind.DELIVER]
    assert delivered == [(2, 5), (1, 7)]
    assert bridge.next_seq == 8
    assert bridge.deliveries(8, []) == b""


def test_a_read_from_before_a_reset_is_dropped() -> None:
    bridge = logic(next_seq=5)
    bridge.gap(Gap(5, 9, "entries are missing"))
    bridge.next_seq = 40  # the tail, read again after the reset
    assert bridge.deliveries(5, [entry(5, 2)]) == b""
    assert bridge.next_seq == 40


def test_the_broker_is_away_from_the_start_of_the_call_that_failed() -> None:
    # A call that hangs until its own bound (a paused server) fails only after the timeout:
    # the RESET is due at that first failure, not a timeout later.
    bridge = logic(next_seq=5, timeout=10.0)
    first = bridge.unavailable(BrokerUnavailable("no answer"), 0, now=112.0, started=100.0)
    assert first.reset is not None
    assert first.notes[0] == "broker unavailable (no answer); retrying"
    assert first.notes[1].startswith("RESET: the broker was unreachable for over 10 s")
