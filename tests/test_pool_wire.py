"""The job pool's pure parts, no processes: the job frame codec, the hub's stamping and merging
of DIRECT frames, the worker reader's side frames, the relay's routes (bounce, leave, notices),
--pool's syntax and the console's `--pool` words."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from stereo.control.syntax import parse_words
from stereo.errors import ConfigError, ProtocolError
from stereo.master.pool_routes import PoolRoutes
from stereo.master.pools import check_pools, parse_pool
from stereo.outbox import Outbox
from stereo.wire.framing import Direct, Frame, FrameReader
from stereo.wire.jobs import JOB_HEADER_SIZE, NEXT_IS_YOURS, Op, decode_job, encode_job
from stereo.wire.protocol import (
    BroadcastReader,
    HubIngress,
    Kind,
    Run,
    encode_broadcast,
    encode_map,
)

LIMIT = 64 * 1024
BOTH = [pytest.param(True, id="C"), pytest.param(False, id="python")]


def test_a_job_frame_round_trips_and_bad_ones_are_refused() -> None:
    frame = encode_job(7, Op.JOB, 2**40, b"pickled")
    assert frame[4] == Kind.DIRECT and len(frame) == JOB_HEADER_SIZE + 7
    assert tuple(decode_job(frame[5:])) == (7, Op.JOB, 2**40, b"pickled")
    with pytest.raises(ProtocolError, match="too short"):
        decode_job(frame[5:16])
    with pytest.raises(ProtocolError, match="unknown job op 9"):
        decode_job(b"\0\0\0\x07\x09" + bytes(8))
    # An answer may say that the pool process starts the caller's next job; nothing else may.
    flagged = encode_job(7, Op.ERROR | NEXT_IS_YOURS, 3, b"e")
    assert decode_job(flagged[5:]).op == Op.ERROR | NEXT_IS_YOURS
    with pytest.raises(ProtocolError, match="unknown job op 129"):
        decode_job(encode_job(7, Op.JOB | NEXT_IS_YOURS, 3)[5:])


def test_the_hub_stamps_the_senders_address_and_merges_frames_for_one_address() -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    ingress.address = 42
    to_5 = [encode_job(5, Op.JOB, n, b"x") for n in range(3)]
    stream = to_5[0] + encode_broadcast(b"\x01", LIMIT) + to_5[1] + to_5[2]
    stream += encode_job(6, Op.JOB, 9) + encode_broadcast(b"\x02", LIMIT)
    ingress.receive_data(stream)
    events, next_seq = ingress.events(10)
    directs = [e for e in events if isinstance(e, Direct)]
    runs = [e for e in events if isinstance(e, Run)]
    assert next_seq == 12 and [(r.first_seq, r.count) for r in runs] == [(10, 1), (11, 1)]
    # Each run and each chunk is one slice of the stream, holding only its own frames: the first
    # frame for 5 stands alone (a broadcast came between), the next two are one chunk.
    assert [len(r.data) for r in runs] == [18, 18]
    assert [(d.target, len(d.data)) for d in directs] == [(5, 19), (5, 38), (6, 18)]
    reader = FrameReader(LIMIT)
    reader.receive_data(b"".join(d.data for d in directs))
    peers = [decode_job(f.body).peer for f in reader.frames()]
    assert peers == [42, 42, 42, 42]  # the receiver sees who sent it


def test_a_direct_frame_too_short_ends_the_stream_after_the_good_frames() -> None:
    ingress = HubIngress(sender=1, max_message_size=LIMIT)
    ingress.receive_data(encode_job(5, Op.JOB, 1) + b"\0\0\0\x02\x0b\0")
    events, _ = ingress.events(1)
    assert isinstance(events[0], Direct) and isinstance(events[1], ProtocolError)
    assert "DIRECT frame of 2 bytes is too short" in str(events[1])


@pytest.mark.parametrize("accelerate", BOTH)
def test_the_worker_reader_hands_pool_frames_aside_and_broadcasts_on(accelerate: bool) -> None:
    reader = BroadcastReader(LIMIT, accelerate=accelerate)
    members = encode_map(Kind.MEMBERS, {"pools": {}, "dead": [], "drained": []})
    reader.receive_data(
        encode_broadcast(b"\x01", LIMIT, seq=1)
        + encode_job(3, Op.RESULT, 1, b"r")
        + members
        + encode_broadcast(b"\x02", LIMIT, seq=2)
    )
    with pytest.raises(ProtocolError, match="DIRECT"):  # no pool client: refused as before
        reader_without(accelerate)
    aside: list[tuple[int, bytes]] = []
    reader.on_frame = lambda kind, body: aside.append((kind, body))
    assert [m.data for m in reader.deliveries()] == [1, 2]
    assert [kind for kind, _ in aside] == [Kind.DIRECT, Kind.MEMBERS]
    assert decode_job(aside[0][1]).body == b"r"


def reader_without(accelerate: bool) -> list[Any]:
    reader = BroadcastReader(LIMIT, accelerate=accelerate)
    reader.receive_data(encode_job(3, Op.RESULT, 1, b"r") + encode_broadcast(b"\x01", LIMIT))
    return reader.deliveries()


class FakePeer:
    def __init__(self, pool: str | None, pid: int = 0) -> None:
        self.outbox = Outbox(None)
        self.ingress = HubIngress(0, LIMIT)
        self.pid = pid
        self.address = 0
        self.pool = pool
        self.pool_leaving = False
        self.pool_drained = False
        self.jobs_done = 0
        self.jobs_queued = 0

    @property
    def pending_bytes(self) -> int:
        return self.outbox.pending_bytes

    def frames(self) -> list[Frame]:
        reader = FrameReader(LIMIT)
        reader.receive_data(b"".join(self.outbox.take()))
        return reader.frames()


def test_routes_relay_bounce_and_tell_the_workers_who_serves() -> None:
    callers: dict[FakePeer, None] = {}
    cut: list[str] = []
    routes: PoolRoutes[FakePeer] = PoolRoutes(callers, lambda peer, why: cut.append(why))
    worker, pool = FakePeer(None), FakePeer("default", pid=99)
    for peer in (worker, pool):
        routes.join(peer)
    callers[worker] = None
    assert worker.frames() == []  # no pool process yet: no MEMBERS (the protocol unchanged)
    routes.ready(pool)
    notice = cbor2.loads(worker.frames()[0].body)
    assert notice == {"pools": {"default": [[pool.address, 99]]}, "dead": [], "drained": []}
    job = encode_job(pool.address, Op.JOB, 1, b"x")
    routes.relay(worker, Direct(job, pool.address))
    assert pool.frames()[0].body == job[5:]
    # Leaving: END after what was relayed; later frames come back to their sender, BOUNCED.
    routes.state(pool, {"done": 3, "queued": 0, "leaving": True})
    assert [f.kind for f in pool.frames()] == [Kind.END]
    assert cbor2.loads(worker.frames()[0].body)["pools"] == {}
    routes.relay(worker, Direct(job, pool.address))
    bounced = worker.frames()[0]
    assert bounced.kind == Kind.BOUNCED and decode_job(bounced.body).peer == pool.address
    routes.state(pool, {"done": 3, "queued": 0, "drained": True})
    routes.leave(pool)
    assert cbor2.loads(worker.frames()[0].body)["drained"] == [pool.address]
    assert pool.jobs_done == 3 and cut == []


def test_one_reads_frames_leave_in_one_write_per_receiver_and_bounce_one_by_one() -> None:
    callers: dict[FakePeer, None] = {}
    routes: PoolRoutes[FakePeer] = PoolRoutes(callers, lambda peer, why: None)
    worker, first, second = FakePeer(None), FakePeer("default"), FakePeer("default")
    for peer in (worker, first, second):
        routes.join(peer)
    frames = [encode_job(p.address, Op.JOB, n) for n, p in enumerate([first, second, first])]
    routes.relay_all(worker, [Direct(f, f[8]) for f in frames])
    assert first.outbox.take() == [frames[0] + frames[2]]  # one chunk, in order
    assert second.outbox.take() == [frames[1]]
    first.pool_leaving = True
    routes.relay_all(worker, [Direct(frames[0], first.address), Direct(frames[2], first.address)])
    bounced = worker.frames()
    assert [(f.kind, decode_job(f.body).job) for f in bounced] == [
        (Kind.BOUNCED, 0),
        (Kind.BOUNCED, 2),
    ]


def test_pool_option_syntax() -> None:
    assert parse_pool("2") == ("default", 2)
    assert parse_pool("pdf=1") == ("pdf", 1)
    for bad, why in [("x=y", "number"), ("=2", "name"), ("9a=1", "name"), ("-1", "number")]:
        with pytest.raises(ConfigError, match=why):
            parse_pool(bad)
    with pytest.raises(ConfigError, match="--max-workers"):
        check_pools({"a": 3, "b": 2}, room=4)


def test_console_words_target_the_pool() -> None:
    assert parse_words(["scale", "3", "--pool"])[1] == {"workers": 3, "pool": "default"}
    assert parse_words(["add", "--pool", "pdf"])[1] == {"count": 1, "pool": "pdf"}
    assert parse_words(["add", "2", "--pool", "pdf"])[1] == {"count": 2, "pool": "pdf"}
    assert parse_words(["remove", "-n", "1", "--pool"])[1] == {"count": 1, "pool": "default"}
    assert parse_words(["scale", "3"])[1] == {"workers": 3}
