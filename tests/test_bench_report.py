"""The benchmark suite's arithmetic and its saved results (the legs themselves are benchmarks,
run by ``python -m bench``, not tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.apps._bridge import BridgeSpec, Ledger, sender_id
from bench.bridge import reduce_reports
from bench.load import parse_wrk
from bench.report import render, serving_ceiling, targets_table
from bench.results import (
    BASELINE,
    BATCHES,
    AsgiHttpResult,
    BridgeResult,
    FanoutResult,
    RelayResult,
    Results,
    ServingResult,
)
from bench.wsload import OP_BINARY, OP_PING, OP_TEXT, FrameError, Tally, data_message, parse_frames

ROOT = Path(__file__).resolve().parent.parent


def serving(leg: str, workers: int, rps: float, server: float, load: float) -> ServingResult:
    return ServingResult(
        leg=leg,
        workers=workers,
        tool="wrk",
        rps=rps,
        seconds=10.0,
        server_cpu_s=10.0 * server,
        load_cpu_s=10.0 * load,
        requests={str(w): int(rps * 10 / workers) for w in range(1, workers + 1)},
    )


def test_the_serving_ceiling_counts_the_load_generators_share_of_the_cores() -> None:
    results = Results(machine={"cpus": "2"}, plan={})
    results.serving = [
        serving("plain trio", 1, 40_000, 1.0, 0.35),
        serving("stereo -w 1", 1, 40_000, 1.0, 0.35),  # one core, and wrk takes 0.35 of another
        serving("stereo -w 2", 2, 56_000, 1.6, 0.4),
    ]
    # Two cores over 1.35 cores per 40,000 req/s: at most 2 / 1.35 = 1.48x the -w 1 rate.
    assert serving_ceiling(results) == pytest.approx(2 / 1.35)
    table = targets_table(results)
    assert "| serving -w 2 >= 1.6x -w 1 | 1.40x (this machine's ceiling: 1.48x) | MISS |" in table


def relay(peer: str, mode: str, wall_s: float, p50_us: float | None = None) -> RelayResult:
    """A loss-free W=4 / 64 B leg of 25,000 messages per sender (relay) or 2,500 (latency)."""
    count = 25_000 if mode == "relay" else 2_500
    expected = 4 * (4 * count if mode == "relay" else count)
    return RelayResult(
        peer=peer,
        mode=mode,
        workers=4,
        payload=64,
        count=count,
        expected=expected,
        deliveries=expected,
        wall_s=wall_s,
        relay_cpu_pct=20.0,
        p50_us=p50_us,
        p99_us=None if p50_us is None else 3 * p50_us,
        max_us=None if p50_us is None else 10 * p50_us,
    )


def saved_and_rendered(results: Results, tmp_path: Path) -> str:
    """The tables of ``results`` saved and loaded again, as ``--from-json`` renders them."""
    results.save(tmp_path / "results.json")
    return render(Results.load(tmp_path / "results.json"))


def test_a_baseline_is_one_more_peer_with_its_ratio_and_never_taken_for_stereo(
    tmp_path: Path,
) -> None:
    results = Results(machine={BASELINE: "/old/bin/stereo: stereo 0.1.0 at /old/stereo"}, plan={})
    # 400,000 deliveries each: 0.4 s is 1.00 M/s, 0.5 s 800 k/s, 0.8 s 500 k/s.
    results.relay = [
        relay("stereo", "relay", 0.4),
        relay(BASELINE, "relay", 0.5),
        relay("zmq-proxy", "relay", 0.8),
    ]
    results.latency = [
        relay("stereo", "latency", 5.0, p50_us=300),
        relay(BASELINE, "latency", 5.0, p50_us=400),
        relay("zmq-proxy", "latency", 5.0, p50_us=200),
    ]
    tables = saved_and_rendered(results, tmp_path)
    assert (
        "**Baseline:** `stereo-baseline` is /old/bin/stereo: stereo 0.1.0 at /old/stereo," in tables
    )
    assert "| W | payload | msgs/worker | stereo | stereo-baseline | zmq-proxy |" in tables
    assert "| 4 | 64 B | 25,000 | 1.00 M | 800.0 k (1.25x) | 500.0 k (2.00x) |" in tables
    assert "| W | payload | stereo | stereo-baseline | zmq-proxy |" in tables
    assert "| stereo-baseline | 400 | 1200 | 4000 | 10,000/10,000 | 0.75x / 0.75x |" in tables
    assert "| zmq-proxy | 200 | 600 | 2000 | 10,000/10,000 | 1.50x / 1.50x |" in tables
    # The targets stay stereo's own against the other runtimes.
    assert "| relay W=4/64 B >= 1x zmq-proxy | 2.00x | PASS |" in tables
    assert "| latency p50 <= 150 µs | 300 µs | MISS |" in tables


def relay_at(peer: str, rate_k: float, ns: float) -> RelayResult:
    """A loss-free W=4 / 64 B relay leg at rate_k thousand deliveries/s and ns CPU each."""
    deliveries = 400_000
    return RelayResult(
        peer=peer,
        mode="relay",
        workers=4,
        payload=64,
        count=25_000,
        expected=deliveries,
        deliveries=deliveries,
        wall_s=deliveries / (rate_k * 1e3),
        relay_cpu_s=ns * deliveries / 1e9,
        relay_cpu_pct=5.0,
    )


def test_the_contended_tables_put_both_conditions_side_by_side_against_zeromq(
    tmp_path: Path,
) -> None:
    results = Results()
    results.relay = [relay_at("stereo", 900, 100), relay_at(BATCHES, 1200, 90)]
    results.relay.append(relay_at("zmq-proxy", 800, 200))
    results.relay_contended = [relay_at("stereo", 500, 150), relay_at("zmq-proxy", 1000, 100)]
    tables = saved_and_rendered(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["relay_contended"][0]["relay_ns_per_delivery"] == pytest.approx(150)
    assert (
        "| 4 | 64 B | stereo | 900.0 k (1.12x) | 500.0 k (0.50x) | 100 (0.50x) | 150 (1.50x) |"
        in (tables)
    )
    assert "| 4 | 64 B | stereo-batches | 1.20 M (1.50x) | - | 90 (0.45x) | - |" in tables
    assert "| relay `async for msg` quiet >= 1.2x ZeroMQ | 1.12x | MISS |" in tables
    assert "| relay `batches()` quiet >= 1.5x ZeroMQ | 1.50x | PASS |" in tables
    assert "| master CPU per delivery contended < ZeroMQ proxy's | 1.50x | MISS |" in tables
    assert "| latency p50 contended <= ZeroMQ's | - | n.a. |" in tables
    # The quiet CPU table carries the same figure.
    assert "| 4 | 64 B | 5 %, 100 ns/delivery | 5 %, 90 ns/delivery |" in tables


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "docs" / "bench").rglob("results.json")),
    ids=lambda p: str(p.parent.relative_to(ROOT)),
)
def test_the_committed_results_still_load_and_render(path: Path) -> None:
    # docs/benchmarks.md quotes these runs; --from-json must keep reading every one of them.
    results = Results.load(path)
    tables = render(results)
    # A run of some workloads only (--only asgi) has those workloads' targets only.
    if results.relay or results.serving:
        assert "### Targets" in tables
    if results.asgi or results.fanout:
        assert "### ASGI targets" in tables
    if results.bridge:
        assert "| target (bridge) |" in tables
    if results.pool:
        assert "### Job pool" in tables
    if results.metrics:
        assert "### A Prometheus scrape every second" in tables
    if results.latency:
        assert "### Latency, send to receipt" in tables
    if results.latency_contended:
        assert "### Quiet and contended" in tables
    if results.costs is not None:
        assert "### Costs" in tables
    assert (
        results.costs is not None
        or results.relay
        or results.latency
        or results.latency_contended
        or results.serving
        or results.asgi
        or results.bridge
        or results.pool
        or results.metrics
    )


WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.95ms  412.55us  12.10ms   91.20%
    Req/Sec    21.80k   800.00     22.90k    84.00%
  Latency Distribution
     50%    2.87ms
     75%    3.01ms
     90%  850.00us
     99%    1.02s
  108512 requests in 5.00s, 13.66MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  21700.41
Transfer/sec:      2.73MB
"""


def test_wrk_report_gives_rate_count_percentiles_in_microseconds_and_errors() -> None:
    report = parse_wrk(WRK_OUTPUT)
    assert report.rps == pytest.approx(21700.41)
    assert (report.requests, report.seconds) == (108512, 5.0)
    assert report.p50_us == pytest.approx(2870.0)
    assert report.p99_us == pytest.approx(1.02e6)
    assert report.non_2xx == 12
    assert report.errors == (
        "Socket errors: connect 0, read 0, write 0, timeout 3; Non-2xx or 3xx responses: 12"
    )


def test_wrk_report_without_latency_or_errors_and_garbage() -> None:
    plain = "\n".join(
        line
        for line in WRK_OUTPUT.splitlines()
        if not line.lstrip().startswith(("Socket", "Non-2xx", "50%", "99%"))
    )
    report = parse_wrk(plain)
    assert (report.p50_us, report.p99_us, report.errors, report.non_2xx) == (None, None, None, 0)
    with pytest.raises(RuntimeError, match="cannot read wrk"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def test_server_frames_split_whole_and_a_partial_one_is_left_for_later() -> None:
    big, huge = b"b" * 300, b"h" * 70_000
    stream = frame(OP_TEXT, b"d 0 1 x") + frame(OP_PING, b"") + frame(OP_TEXT, big)
    stream += frame(OP_BINARY, huge)
    frames, used = parse_frames(stream)
    assert frames == [(OP_TEXT, b"d 0 1 x"), (OP_PING, b""), (OP_TEXT, big), (2, huge)]
    assert used == len(stream)
    # Cut anywhere inside the last frame (its length field included): it waits for more bytes.
    for cut in (1, 3, 9, 500):
        frames, used = parse_frames(stream[: len(stream) - len(huge) - 10 + cut])
        assert len(frames) == 3
        assert used == len(stream) - len(huge) - 10


def test_masked_or_fragmented_server_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="masked"):
        parse_frames(bytes([0x81, 0x80 | 1]) + b"mask" + b"x")
    with pytest.raises(FrameError, match="fragmented"):
        parse_frames(bytes([OP_TEXT, 1]) + b"x")  # FIN clear


def test_a_tally_counts_each_sequence_number_once_and_the_rest_as_lost() -> None:
    tally = Tally(4)
    for seq in (0, 2, 2):
        tally.add(data_message(seq, 1_000).encode(), 4_000, keep_delay=True)
    assert len(data_message(3, 1_000)) == 64
    assert (tally.received, tally.duplicates, tally.lost) == (2, 1, 2)
    assert tally.delays_ns == [3_000, 3_000]


def asgi_results() -> Results:
    results = Results(machine={"cpus": "2"}, plan={"fanout_rate": 500})

    def http(app: str, server: str, rps: float) -> AsgiHttpResult:
        return AsgiHttpResult(
            app, server, rps, int(rps * 5), 5.0, 1000.0, 3000.0, 5.0 * 0.9, 5.0 * 0.3
        )

    results.asgi = [
        http("raw ASGI", "stereo", 22_000),
        http("raw ASGI", "uvicorn httptools+uvloop", 20_000),
        http("FastAPI", "stereo", 6_000),
        http("FastAPI", "hypercorn trio", 1_500),
        http("FastAPI", "uvicorn httptools+uvloop", 5_000),
    ]

    def fanout(server: str, mode: str, rate: float, cpu_s: float, p99: float) -> FanoutResult:
        count = 20_000 if mode == "burst" else 2_500
        row = FanoutResult(server, mode, 4, 8, count, deliveries=8 * count)
        row.wall_s = 8 * count / rate
        row.server_cpu_s = cpu_s
        row.p50_us, row.p99_us, row.max_us = p99 / 4, p99, 2 * p99
        return row

    results.fanout = [
        fanout("stereo", "burst", 60_000, 3.2, 0),  # 20 µs a delivery
        fanout("uvicorn + broadcaster", "burst", 20_000, 9.6, 0),  # 60 µs
        fanout("stereo", "paced", 4_000, 1.0, 900),
        fanout("uvicorn + broadcaster", "paced", 4_000, 2.0, 8_000),
    ]
    return results


def test_asgi_targets_from_a_saved_run(tmp_path: Path) -> None:
    results = asgi_results()
    results.fanout[0].load_cpu_s = 0.4 * results.fanout[0].wall_s
    results.fanout[3].deliveries -= 5  # the peer lost 5 messages at 500 msg/s
    results.save(tmp_path / "results.json")
    tables = render(Results.load(tmp_path / "results.json"))
    assert "| raw ASGI req/s >= 1.0x uvicorn httptools+uvloop | 1.10x | PASS |" in tables
    assert "| FastAPI req/s >= 3x hypercorn trio | 4.00x | PASS |" in tables
    assert "| FastAPI req/s vs uvicorn httptools+uvloop (reported) | 1.20x | - |" in tables
    assert "| fan-out deliveries/s >= 2x uvicorn + broadcaster | 3.00x | PASS |" in tables
    assert "| fan-out CPU per delivery <= 0.5x (peer: uvicorn + redis-server) | 0.33x | PASS |" in (
        tables
    )
    assert (
        "| fan-out generator not the bottleneck (< 0.8 core during stereo's burst) | 0.40 cores"
        " | PASS |" in tables
    )
    # The peer's paced run lost messages: no p99 ratio from it, and the loss is a MISS.
    assert "| fan-out p99 at 500 msg/s lower (< 1.0x) | - | n.a. |" in tables
    assert "uvicorn + broadcaster paced: 5 lost | MISS |" in tables
    assert "19,995/20,000 (**5 lost**)" in tables
    # Issue 5's targets are not rendered for a run of the asgi workload alone.
    assert "### Targets" not in tables


# -- the bridge workload ----------------------------------------------------------------------


def bridge_spec(mode: str = "burst", count: int = 4) -> BridgeSpec:
    return BridgeSpec(mode, 2, 2, count, 64, 500, "/nonexistent", 10.0, "redis://x", "c")  # type: ignore[arg-type]


def test_the_ledger_tells_gaps_duplicates_and_reordering_apart_per_sender() -> None:
    spec = bridge_spec(count=3)
    ledger = Ledger(spec, sender_id(1, 1))
    assert spec.senders == [101, 102, 201, 202]
    for sender in spec.senders:
        for seq in (0, 2, 1) if sender == 202 else (0, 1, 2):
            ledger.receive(["d", 0, sender, seq, b""], 1)
    assert ledger.complete and ledger.reordered == 1 and ledger.missing() == {}
    assert ledger.receive(["d", 0, 101, 1, b""], 2)  # still complete, now with a duplicate
    assert ledger.duplicates == 1 and ledger.distinct == 12
    other = Ledger(spec, sender_id(2, 1))
    other.receive(["d", 0, 101, 0, b""], 1)
    other.receive(["d", 0, 999, 0, b""], 1)  # no sender of this run
    other.receive(["d", 0, 101, 7, b""], 1)  # a seq out of range
    assert other.foreign == 2 and not other.complete
    assert other.missing() == {101: 2, 102: 3, 201: 3, 202: 3}


def test_the_ledger_keeps_only_cross_hub_latencies_and_only_when_paced() -> None:
    paced = Ledger(bridge_spec("paced"), sender_id(1, 2))
    paced.receive(["d", 1_000, 101, 0, b""], 5_000)  # same hub
    paced.receive(["d", 1_000, 201, 0, b""], 8_000)  # the other hub
    assert paced.latencies == [7_000]
    burst = Ledger(bridge_spec("burst"), sender_id(1, 2))
    burst.receive(["d", 1_000, 201, 0, b""], 8_000)
    assert burst.latencies == []


def test_paced_senders_are_staggered_to_an_even_total_rate() -> None:
    spec = bridge_spec("paced")
    assert spec.interval_s == pytest.approx(4 / 500)  # 125 msg/s each
    offsets = [spec.start_offset_s(s) for s in spec.senders]
    assert offsets == pytest.approx([0, 0.002, 0.004, 0.006])


def ledger_report(me: int, distinct: int, start: int, last: int, lat: list[int]) -> dict[str, Any]:
    return {
        "id": me,
        "start_ns": start,
        "last_ns": last,
        "distinct": distinct,
        "duplicates": 0,
        "reordered": 0,
        "foreign": 0,
        "latencies_ns": lat,
    }


def test_bridge_reports_reduce_to_one_row_and_a_silent_worker_counts_as_loss() -> None:
    row = BridgeResult("stereo", "redis", "paced", 2, 2, 4, 500)
    reports = [
        ledger_report(101, 16, 1_000_000_000, 1_500_000_000, [3_000, 1_000]),
        ledger_report(102, 16, 1_100_000_000, 2_000_000_000, [2_000]),
        ledger_report(201, 16, 1_000_000_000, 1_900_000_000, [4_000]),
    ]  # 202 wrote nothing
    reduce_reports(row, reports)
    assert row.expected == 64 and row.deliveries == 48 and row.missing == 16
    assert row.wall_s == pytest.approx(1.0) and row.deliveries_per_s == pytest.approx(48)
    assert (row.p50_us, row.p99_us, row.max_us) == (2.0, 4.0, 4.0)
    assert row.note == "1 of 4 workers reported nothing" and not row.ok


def bridge_row(system: str, mode: str, rate: float, missing: int = 0) -> BridgeResult:
    row = BridgeResult(system, "redis", mode, 2, 2, 1_000, 500 if mode == "paced" else 0)
    row.deliveries = row.expected - missing
    row.missing = missing
    row.wall_s = row.deliveries / rate
    if mode == "paced":
        row.p50_us, row.p99_us, row.rtt_p50_us, row.rtt_p99_us = 900.0, 2_000.0, 60.0, 300.0
    return row


def test_bridge_targets_and_their_round_trip_through_json(tmp_path: Path) -> None:
    results = Results(machine={}, plan={})
    results.bridge = [
        bridge_row("stereo", "burst", 600_000),
        bridge_row("stereo", "paced", 0.0 + 1),
        bridge_row("redis pub/sub", "burst", 100_000, missing=500),
        bridge_row("redis pub/sub", "paced", 1),
    ]
    results.save(tmp_path / "results.json")
    again = Results.load(tmp_path / "results.json")
    assert again.bridge == results.bridge
    table = render(again)
    assert "| redis: deliveries/s >= 5x redis pub/sub | 6.00x | PASS |" in table
    assert (
        "| redis: stereo delivers every message once, at every worker | no loss | PASS |" in table
    )
    assert "15,500/16,000 (**500 missing**)" in table
    assert "| 900 / 2,000 | 60 / 300 |" in table
    results.bridge[0] = bridge_row("stereo", "burst", 400_000, missing=1)
    table = render(results)
    # A lossy rate is no rate to compare.
    assert "| redis: deliveries/s >= 5x redis pub/sub | - | n.a. |" in table
    assert "burst: 15,999/16,000 (**1 missing**) | MISS |" in table
