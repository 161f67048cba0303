"""The Prometheus exporter (--metrics): the series of a snapshot (pure), and `curl /metrics`
on a real master after a scripted scenario: broadcasts, a worker killed from outside, a slow
consumer cut off."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import trio
from conftest import ctl, open_stereo
from prometheus_client.parser import text_string_to_metric_families

from stereo import exitcodes
from stereo.master.process import RESTART_REASONS, WorkerProcess
from stereo.observe.jobs import JobTotals
from stereo.observe.metrics import exposition
from stereo.observe.model import WORKER_STATES, Figures, health, state_counts
from stereo.snapshot import (
    MESSAGE_SIZE_BUCKETS,
    HubStatistics,
    JobCounts,
    MasterSnapshot,
    PeerStatistics,
    ProcessSnapshot,
    SlotSnapshot,
    SupervisorSnapshot,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

# -- pure: a snapshot's series ---------------------------------------------------------------------


def _process(
    pid: int, state: str = "ready", current: bool = True, jobs: JobCounts | None = None
) -> ProcessSnapshot:
    peer = PeerStatistics(
        5, 7, 100, 200, outbox_bytes=42, peak_outbox_bytes=99, cut_off_reason=None
    )
    return ProcessSnapshot(pid, state, current, 1.0, 1.0, 2.0, False, 3.0, None, peer, jobs)


def _snapshot() -> dict[str, Any]:
    slots = (
        SlotSnapshot(
            1,
            "running",
            2,
            "x",
            None,
            0,
            1,
            (_process(101),),
            restart_reasons=(("crash", 1), ("killed", 1)),
        ),
        # mid-restart: the old process drains, the new one starts
        SlotSnapshot(
            2,
            "running",
            0,
            None,
            None,
            0,
            0,
            (_process(102, "draining", False), _process(103, "starting")),
        ),
        SlotSnapshot(3, "backoff", 4, "crash", None, 4, 0, ()),
        SlotSnapshot(4, "removed", 0, None, None, 0, 0, ()),
        # the job pools (--pool 1 --pool pdf=1): pool slots take ids after the workers'
        SlotSnapshot(
            5,
            "running",
            1,
            "killed",
            None,
            0,
            1,
            (_process(105, jobs=JobCounts(done=7, queued=2)),),
            pool="default",
            restart_reasons=(("killed", 1),),
        ),
        SlotSnapshot(
            6,
            "running",
            0,
            None,
            None,
            0,
            0,
            (
                _process(106, "draining", False, JobCounts(done=3, queued=1)),
                _process(107, "starting", jobs=JobCounts(done=0, queued=4)),
            ),
            pool="pdf",
        ),
    )
    hub = HubStatistics(
        broadcasts=10,
        deliveries=30,
        bytes_in=1000,
        bytes_out=3000,
        cutoffs=2,
        peers=3,
        next_seq=11,
        outbox_limit=1 << 20,
        cutoffs_by_slot=((1, 2),),
        size_buckets=(1, 2, 7) + (0,) * (len(MESSAGE_SIZE_BUCKETS) - 2),
        relayed_bytes=900,
    )
    supervisor = SupervisorSnapshot(slots, 6, False, pools=("default", "pdf", "idle"))
    snap = MasterSnapshot(os.getpid(), 10.0, 0.0, None, supervisor, hub)
    return dataclasses.asdict(snap)


WORKER = {"role": "worker", "pool": ""}


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_a_snapshot_gives_every_series() -> None:
    figures = {101: Figures(1.5, 10_000_000, 3.0), 103: Figures(0.25, 9_000_000, None)}
    figures[105] = Figures(0.5, 8_000_000, 1.0)
    body, content_type = exposition(_snapshot(), figures, "", {("default", 5): 9})
    assert content_type.startswith("text/plain; version=0.0.4")
    s = _samples(body.decode())
    workers = {state: _value(s, "stereo_workers", state=state, **WORKER) for state in WORKER_STATES}
    assert workers == {
        "starting": 1,
        "ready": 1,
        "draining": 1,
        "stopped": 0,
        "backoff": 1,
        "failed": 0,
    }
    assert _value(s, "stereo_worker_up", slot="1", **WORKER) == 1
    assert _value(s, "stereo_worker_up", slot="2", **WORKER) == 0  # its current one is starting
    assert _value(s, "stereo_worker_up", slot="3", **WORKER) == 0
    assert not [k for k in s if k[0] == "stereo_worker_up" and ("slot", "4") in k[1]]  # removed
    assert _value(s, "stereo_worker_restarts_total", slot="1", reason="crash", **WORKER) == 1
    assert _value(s, "stereo_worker_restarts_total", slot="1", reason="killed", **WORKER) == 1
    # CPU and memory of the current process: slot 2's is 103, not the draining 102
    assert _value(s, "stereo_worker_cpu_seconds_total", slot="1", **WORKER) == 1.5
    assert _value(s, "stereo_worker_cpu_seconds_total", slot="2", **WORKER) == 0.25
    assert _value(s, "stereo_worker_resident_memory_bytes", slot="2", **WORKER) == 9_000_000
    assert _value(s, "stereo_worker_outbox_bytes", slot="1", **WORKER) == 42
    assert _value(s, "stereo_worker_cutoffs_total", slot="1", **WORKER) == 2
    assert _value(s, "stereo_worker_cutoffs_total", slot="3", **WORKER) == 0
    assert _value(s, "stereo_hub_broadcasts_total") == 10
    assert _value(s, "stereo_hub_deliveries_total") == 30
    assert _value(s, "stereo_hub_bytes_total", direction="in") == 1000
    assert _value(s, "stereo_hub_bytes_total", direction="out") == 3000
    assert _value(s, "stereo_hub_message_size_bytes_bucket", le="64.0") == 1
    assert _value(s, "stereo_hub_message_size_bytes_bucket", le="256.0") == 3
    assert _value(s, "stereo_hub_message_size_bytes_bucket", le="1024.0") == 10
    assert _value(s, "stereo_hub_message_size_bytes_bucket", le="+Inf") == 10
    assert _value(s, "stereo_hub_message_size_bytes_count") == 10
    assert _value(s, "stereo_hub_message_size_bytes_sum") == 900
    # the master's own process_* series (here this test's process stands in for it)
    assert _value(s, "process_resident_memory_bytes") > 0


def test_pool_processes_have_their_role_and_pool_and_the_pools_their_jobs() -> None:
    figures = {105: Figures(0.5, 8_000_000, 1.0)}
    body, _ = exposition(_snapshot(), figures, "", {("default", 5): 9, ("pdf", 6): 3})
    s = _samples(body.decode())
    default = {"role": "pool", "pool": "default"}
    pdf = {"role": "pool", "pool": "pdf"}
    # the per-slot series, labelled
    assert _value(s, "stereo_worker_up", slot="5", **default) == 1
    assert _value(s, "stereo_worker_up", slot="6", **pdf) == 0
    assert _value(s, "stereo_worker_restarts_total", slot="5", reason="killed", **default) == 1
    assert _value(s, "stereo_worker_cpu_seconds_total", slot="5", **default) == 0.5
    assert _value(s, "stereo_worker_resident_memory_bytes", slot="5", **default) == 8_000_000
    assert _value(s, "stereo_worker_outbox_bytes", slot="6", **pdf) == 42
    assert _value(s, "stereo_worker_cutoffs_total", slot="5", **default) == 0
    # every slot has exactly one role: no pool slot among the workers' series, nor the reverse
    ups = {dict(k[1])["slot"]: dict(k[1]) for k in s if k[0] == "stereo_worker_up"}
    assert {slot: (labels["role"], labels["pool"]) for slot, labels in ups.items()} == {
        "1": ("worker", ""),
        "2": ("worker", ""),
        "3": ("worker", ""),
        "5": ("pool", "default"),
        "6": ("pool", "pdf"),
    }
    # processes by state: the workers' apart, each pool's, a pool without process all 0
    assert _value(s, "stereo_workers", state="ready", **WORKER) == 1
    assert _value(s, "stereo_workers", state="ready", **default) == 1
    assert _value(s, "stereo_workers", state="draining", **pdf) == 1
    assert _value(s, "stereo_workers", state="starting", **pdf) == 1
    assert _value(s, "stereo_workers", state="ready", **pdf) == 0
    idle = {"role": "pool", "pool": "idle"}
    assert sum(_value(s, "stereo_workers", state=st, **idle) for st in ("ready", "starting")) == 0
    # jobs: queued as the processes last said (a draining one's still count), done as given
    assert _value(s, "stereo_pool_jobs_queued", pool="default", slot="5") == 2
    assert _value(s, "stereo_pool_jobs_queued", pool="pdf", slot="6") == 1 + 4
    assert _value(s, "stereo_pool_jobs_done_total", pool="default", slot="5") == 9
    assert _value(s, "stereo_pool_jobs_done_total", pool="pdf", slot="6") == 3
    # /healthz counts the workers only: pool processes serve no one
    assert health(_snapshot())[1]["workers"] == 3


def test_no_pool_series_without_a_pool() -> None:
    snap = _snapshot()
    snap["supervisor"]["pools"] = []
    snap["supervisor"]["slots"] = snap["supervisor"]["slots"][:4]
    body, _ = exposition(snap, {}, "")
    assert b"stereo_pool_" not in body
    assert b'role="pool"' not in body


def _jobs(*procs: tuple[int, int, float]) -> dict[str, Any]:
    """A snapshot of pool slot 5 with these (pid, done, started_wall) processes."""
    processes = [
        {"pid": pid, "started_wall": started, "jobs": {"done": done, "queued": 0}}
        for pid, done, started in procs
    ]
    slot = {"id": 5, "pool": "default", "processes": processes}
    return {"supervisor": {"slots": [slot, {"id": 1, "pool": None, "processes": []}]}}


def test_jobs_done_never_go_back_across_a_slots_processes() -> None:
    totals = JobTotals()
    assert totals.update(_jobs((50, 7, 1.0))) == {("default", 5): 7}
    assert totals.update(_jobs((50, 9, 1.0))) == {("default", 5): 9}
    # a rolling restart: the old one drains beside its successor, then goes
    assert totals.update(_jobs((50, 10, 1.0), (51, 2, 2.0))) == {("default", 5): 12}
    assert totals.update(_jobs((51, 3, 2.0))) == {("default", 5): 13}
    # killed: the slot is empty for a moment, then a new process counts from 0
    assert totals.update(_jobs()) == {("default", 5): 13}
    assert totals.update(_jobs((52, 0, 3.0))) == {("default", 5): 13}
    # the pid of a process gone, given to a new one: another process (started later)
    assert totals.update(_jobs((52, 4, 3.0))) == {("default", 5): 17}
    assert totals.update(_jobs((52, 1, 4.0))) == {("default", 5): 18}
    # a reading of a count lower than one already read (never expected) keeps the higher
    assert totals.update(_jobs((52, 0, 4.0))) == {("default", 5): 18}
    # the slot removed: its total stays (for the pool's sum), it is only not exported
    removed = {"supervisor": {"slots": []}}
    assert totals.update(removed) == {("default", 5): 18}


def test_openmetrics_when_asked() -> None:
    body, content_type = exposition(_snapshot(), {}, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"stereo_worker_restarts_total{" in body


def test_health_and_state_counts() -> None:
    snap = _snapshot()
    assert health(snap) == (True, {"status": "ok", "ready": 1, "workers": 3, "stopping": False})
    # a ready pool process is no ready worker
    snap["supervisor"]["slots"] = [snap["supervisor"]["slots"][i] for i in (2, 4)]
    assert health(snap)[0] is False
    assert state_counts(snap)["backoff"] == 1
    assert state_counts(snap)["ready"] == 0
    assert state_counts(snap, "default")["ready"] == 1


# -- end to end --------------------------------------------------------------------------------


def http_get(url: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, reply.headers["content-type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


async def get(url: str, accept: str = "") -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(http_get, url, accept)


async def scrape(url: str) -> dict[Any, float]:
    status, _, body = await get(url)
    assert status == 200, body
    return _samples(body)


def counters(samples: dict[Any, float]) -> Iterator[tuple[Any, float]]:
    """The counters that must never go back: all but a process's own CPU time, which starts
    over with each new process of a slot (a counter reset, as Prometheus expects)."""
    for key, value in samples.items():
        if key[0] == "stereo_worker_cpu_seconds_total":
            continue
        if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
            yield key, value


FLOOD = 2000  # of 3000 characters: more than the hub connection's kernel buffers hold
PAD = 3000
ARGS = ("observed:serve", "-w", "3", "--max-message-size", "4096", "--outbox-limit", "262144")


@pytest.mark.usefixtures("relay_plane")
async def test_curl_metrics_after_broadcasts_a_kill_and_a_cut_off(tmp_path: Path) -> None:
    env = {
        "OBSERVED_FLOOD": str(FLOOD),
        "OBSERVED_PAD": str(PAD),
        "OBSERVED_SLOW_MARKER": str(tmp_path / "slow"),
    }
    control = str(tmp_path / "control.sock")
    args = (*ARGS, "--metrics", "127.0.0.1:0", "--control", control, "--no-console")
    with trio.fail_after(90):
        async with open_stereo(*args, env=env) as stereo:
            url = (await stereo.wait_for(r"^\[observe\] metrics on (http://\S+)$"))[0][1]
            health_url = url.replace("/metrics", "/healthz")
            await stereo.wait_for(r"^\[worker \d\] ready pid=", count=3)
            status, content_type, body = await get(health_url)
            assert (status, content_type) == (200, "application/json")
            assert json.loads(body)["ready"] == 3
            first = await scrape(url)

            code, out, err = await ctl("--control", control, "broadcast", '"flood"')
            assert code == 0, err
            await stereo.wait_for(r"worker 2 \(pid \d+\) exited: cut off: slow consumer")
            await stereo.wait_for(r"^\[worker 1\] flooded$")
            await stereo.wait_for(r"^\[worker 2\] ready pid=\d+$")  # its successor
            code, out, err = await ctl("--control", control, "--json", "status")
            pid3 = next(row["pid"] for row in json.loads(out) if row["slot"] == 3)
            mark = len(stereo.lines)
            os.kill(pid3, signal.SIGKILL)
            await stereo.wait_for(rf"worker 3 \(pid {pid3}\) exited: killed by SIGKILL", start=mark)
            # Every current process's "up" has come back to it (it printed ready), so the hub
            # has counted it. A loaded machine may cut a reading worker off in the flood too:
            # the expected figures below are read from what the master said happened.
            await stereo.wait_for(r"^\[stereo\] worker 3 \(pid \d+\) ready$", start=mark)
            code, out, err = await ctl("--control", control, "--json", "status")
            for row in json.loads(out):
                await stereo.wait_for(rf"^\[worker {row['slot']}\] ready pid={row['pid']}")

            after = await scrape(url)
            code, out, err = await ctl("--control", control, "--json", "stats")
            stats = json.loads(out)
            code, out, err = await ctl("--control", control, "--json", "status")
            pids = {row["slot"]: row["pid"] for row in json.loads(out)}
            status, content_type, open_body = await get(url, OPENMETRICS)

    # an "up" from every process started, "flood", and the flood
    ups = len(
        {m[1] for line in stereo.lines if (m := re.match(r"^\[worker \d\] ready pid=(\d+)", line))}
    )
    cut_off = [
        sum(
            bool(re.search(rf"worker {i} \(pid \d+\) exited: cut off: slow consumer", line))
            for line in stereo.lines
        )
        for i in (1, 2, 3)
    ]
    assert cut_off[1] == 1  # the worker that never reads; the others only if the flood outran them
    broadcasts = ups + 1 + FLOOD
    assert _value(after, "stereo_hub_broadcasts_total") == broadcasts == stats["broadcasts"]
    assert _value(after, "stereo_hub_deliveries_total") == stats["deliveries"]
    assert _value(after, "stereo_hub_bytes_total", direction="in") == stats["bytes_in"]
    assert _value(after, "stereo_hub_bytes_total", direction="out") == stats["bytes_out"]
    assert _value(after, "stereo_hub_message_size_bytes_count") == broadcasts
    # the small ones ("up"s and "flood") in the first buckets, the flood in the 4 KiB one
    assert _value(after, "stereo_hub_message_size_bytes_bucket", le="256.0") == ups + 1
    assert _value(after, "stereo_hub_message_size_bytes_bucket", le="1024.0") == ups + 1
    assert _value(after, "stereo_hub_message_size_bytes_bucket", le="4096.0") == broadcasts
    for i in (1, 2, 3):
        restarts = (
            _value(
                after, "stereo_worker_restarts_total", slot=str(i), reason="slow_consumer", **WORKER
            )
            if cut_off[i - 1]
            else 0
        )
        assert restarts == cut_off[i - 1]
        assert _value(after, "stereo_worker_cutoffs_total", slot=str(i), **WORKER) == cut_off[i - 1]
    assert _value(after, "stereo_worker_restarts_total", slot="3", reason="killed", **WORKER) == 1
    assert not any(
        k[0] == "stereo_worker_restarts_total" and ("slot", "1") in k[1] and v
        for k, v in after.items()
        if ("reason", "slow_consumer") not in k[1]
    )
    assert _value(after, "stereo_workers", state="ready", **WORKER) == 3
    assert all(_value(after, "stereo_worker_up", slot=str(i), **WORKER) == 1 for i in (1, 2, 3))
    for slot in ("1", "2", "3"):
        assert _value(after, "stereo_worker_outbox_bytes", slot=slot, **WORKER) == 0
        assert _value(after, "stereo_worker_resident_memory_bytes", slot=slot, **WORKER) > 1_000_000
        assert _value(after, "stereo_worker_cpu_seconds_total", slot=slot, **WORKER) > 0
    # slot 3's CPU is its new process's (a counter reset, as Prometheus expects), not the sum
    # over its processes: no more than that process has used by now
    times = psutil.Process(pids[3]).cpu_times() if psutil.pid_exists(pids[3]) else None
    if times is not None:
        assert (
            _value(after, "stereo_worker_cpu_seconds_total", slot="3", **WORKER)
            <= times.user + times.system
        )
    assert _value(after, "process_resident_memory_bytes") > 0
    assert _value(after, "process_cpu_seconds_total") > 0
    # counters never went back between the two scrapes (and every one is still there)
    for key, value in counters(first):
        assert after[key] >= value, key
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert open_body.endswith("# EOF\n")


async def test_healthz_is_503_without_a_ready_worker_and_when_the_master_is_gone(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "gate"
    marker.touch()
    env = {"SLOWBOOT_MARKER": str(marker)}
    control = str(tmp_path / "control.sock")
    with trio.fail_after(60):
        async with open_stereo(
            "slowboot:serve",
            "-w",
            "1",
            "--metrics",
            "127.0.0.1:0",
            "--control",
            control,
            "--no-console",
            env=env,
        ) as stereo:
            url = (await stereo.wait_for(r"^\[observe\] metrics on (http://\S+)$"))[0][1]
            health_url = url.replace("/metrics", "/healthz")
            status, _, body = await get(health_url)
            # the worker sleeps a second in its import: not ready yet
            assert status == 503, body
            assert json.loads(body)["status"] == "unavailable"
            await stereo.wait_for(r"^\[worker 1\] started pid=")
            # the exporter outlives nothing: it ends with the master
            helper = next(p for p in stereo.children() if "stereo.observe" in " ".join(p.cmdline()))
            stereo.process.kill()
            await trio.to_thread.run_sync(helper.wait, 30)
    assert status == 503


async def test_without_a_control_socket_the_observer_is_not_started(tmp_path: Path) -> None:
    # A control socket in a directory others may write to is refused (control/server.py).
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    args = ("observed:serve", "-w", "1", "--control", str(shared / "c.sock"), "--no-console")
    with trio.fail_after(60):
        async with open_stereo(*args, "--metrics", "127.0.0.1:0") as stereo:
            await stereo.wait_for(r"control socket disabled")
            await stereo.wait_for(r"no control socket: --metrics and --dashboard are not served")
            await stereo.wait_for(r"^\[worker 1\] ready pid=")
            assert not [p for p in stereo.children() if "stereo.observe" in " ".join(p.cmdline())]


async def test_the_observer_is_restarted_when_it_dies(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    args = ("observed:serve", "-w", "1", "--control", control, "--no-console")
    with trio.fail_after(60):
        async with open_stereo(*args, "--metrics", "127.0.0.1:0") as stereo:
            await stereo.wait_for(r"^\[observe\] metrics on ")
            helper = next(p for p in stereo.children() if "stereo.observe" in " ".join(p.cmdline()))
            helper.kill()
            await stereo.wait_for(r"observer exited: killed by SIGKILL; restarting in 0\.5 s")
            url = (await stereo.wait_for(r"^\[observe\] metrics on (http://\S+)$", count=2))[1][1]
            await stereo.wait_for(r"^\[worker 1\] ready pid=")
            status, _, body = await get(url.replace("/metrics", "/healthz"))
            assert status == 200, body


async def test_each_exit_has_one_restart_reason() -> None:
    def gone(returncode: int, **state: Any) -> str:
        proc = WorkerProcess(1, 4242, lambda signum: None, dict)
        proc.returncode = returncode
        for name, value in state.items():
            setattr(proc, name, value)
        return proc.restart_reason

    def cut(slow: bool) -> Any:
        return SimpleNamespace(cut_off_reason="why", cut_off_slow=slow, truncated_bytes=0)

    found = {
        gone(1),
        gone(-signal.SIGSEGV),
        gone(0),
        gone(exitcodes.APP_LOAD_ERROR),
        gone(3, boot_error_reason="port taken"),
        gone(-signal.SIGKILL),
        gone(-signal.SIGKILL, kill_reason="no heartbeat for 30 s"),
        gone(-signal.SIGKILL, kill_reason="still draining", kill_kind="drain_timeout"),
        gone(5, peer=cut(slow=True)),
        gone(5, peer=cut(slow=False)),
    }
    assert gone(1) == gone(-signal.SIGSEGV) == "crash"
    assert gone(-signal.SIGKILL) == "killed"
    assert gone(-signal.SIGKILL, kill_reason="no heartbeat for 30 s") == "hang"
    assert gone(5, peer=cut(slow=True)) == "slow_consumer"
    assert gone(5, peer=cut(slow=False)) == "protocol"
    # every reason but a rolling restart's (the supervisor's own) comes from an exit
    assert found == set(RESTART_REASONS) - {"restart"}
