"""The dashboard (stereo dashboard, --dashboard) without a browser: who may use it (pure), its
live feed and its controls over HTTP against a real master. tests/test_dashboard_browser.py
drives the page itself in Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import ctl, open_stereo, stereo_command
from prometheus_client.parser import text_string_to_metric_families

from stereo.observe.access import (
    Access,
    ActionError,
    choose_token,
    is_private,
    parse_action,
    same_origin,
)
from stereo.observe.address import split_host_port
from stereo.observe.history import History
from stereo.observe.jobs import JobTotals
from stereo.observe.model import Figures, pool_sections, worker_rows

# -- pure --------------------------------------------------------------------------------------


def test_only_loopback_and_unix_sockets_go_without_a_token() -> None:
    assert is_private("127.0.0.1:9000")
    assert is_private("127.8.0.1:9000")
    assert is_private("[::1]:9000")
    assert is_private("localhost:9000")
    assert is_private("unix:/run/x.sock")
    assert not is_private("0.0.0.0:9000")
    assert not is_private("[::]:9000")
    assert not is_private("192.168.1.5:9000")
    assert not is_private("dashboard.example:9000")
    assert choose_token("127.0.0.1:9000", None) == (None, False)
    assert choose_token("127.0.0.1:9000", "given") == ("given", False)
    token, generated = choose_token("0.0.0.0:9000", None)
    assert generated and token and len(token) >= 20
    assert choose_token("0.0.0.0:9000", None)[0] != token


def test_the_token_is_asked_of_every_request_once_in_force() -> None:
    assert Access(None).allows({}, {})
    access = Access("s3cret")
    assert not access.allows({}, {})
    assert not access.allows({"token": "wrong"}, {})
    assert access.allows({"token": "s3cret"}, {})
    assert access.allows({}, {"x-stereo-token": "s3cret"})


def test_controls_come_from_the_page_itself() -> None:
    assert same_origin({"host": "127.0.0.1:9000"})  # no Origin: not a browser's cross-site call
    assert same_origin({"host": "127.0.0.1:9000", "origin": "http://127.0.0.1:9000"})
    assert not same_origin({"host": "127.0.0.1:9000", "origin": "http://evil.example"})


def test_actions_are_checked() -> None:
    assert parse_action(b'{"action": "restart", "slot": 2}') == (
        "restart",
        {"ids": [2]},
        "restart 2",
    )
    assert parse_action(b'{"action": "remove", "slot": 1}')[:2] == ("remove", {"ids": [1]})
    assert parse_action(b'{"action": "add", "count": 2}')[:2] == ("add", {"count": 2})
    assert parse_action(b'{"action": "scale", "workers": 0}')[:2] == ("scale", {"workers": 0})
    for bad, why in [
        (b"nope", "JSON"),
        (b"[1]", "object"),
        (b'{"action": "kill", "slot": 1}', "unknown action 'kill'"),
        (b'{"action": "restart"}', "'slot'"),
        (b'{"action": "restart", "slot": true}', "'slot'"),
        (b'{"action": "add", "count": 0}', "at least 1"),
        (b'{"action": "scale", "workers": -1}', "at least 0"),
    ]:
        with pytest.raises(ActionError, match=why):
            parse_action(bad)


def test_addresses() -> None:
    assert split_host_port("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert split_host_port("[::1]:0") == ("::1", 0)
    for bad in ("9000", ":9000", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            split_host_port(bad)


def _snap(now: float, broadcasts: int, pid: int = 7) -> dict[str, Any]:
    proc = {"pid": pid, "current": True, "state": "ready"}
    return {
        "now": now,
        "hub": {
            "broadcasts": broadcasts,
            "deliveries": 2 * broadcasts,
            "bytes_in": 0,
            "bytes_out": 0,
        },
        "supervisor": {"slots": [{"id": 1, "state": "running", "processes": [proc]}]},
    }


def test_history_turns_counters_into_rates() -> None:
    history = History(points=3)
    figures = {7: Figures(1.0, 1000, 12.5)}
    assert history.add(_snap(10.0, 0), figures, 1.0)["rates"]["broadcasts"] == 0
    point = history.add(_snap(12.0, 100), figures, 3.0)
    assert point["rates"]["broadcasts"] == 50 and point["rates"]["deliveries"] == 100
    assert point["workers"] == {"1": {"cpu": 12.5, "rss": 1000, "pool": None}}
    # another master (counters went back): no negative rate
    assert history.add(_snap(1.0, 3), figures, 4.0)["rates"]["broadcasts"] == 0
    history.add(_snap(2.0, 4), {}, 5.0)
    assert len(history.points) == 3


def _pooled(now: float, done: int, pool_pid: int = 8) -> dict[str, Any]:
    """Worker slot 1 (pid 7) and the default pool's slot 2 (pool_pid, ``done`` jobs done)."""
    hub = {"messages_in": 1, "messages_out": 2, "outbox_bytes": 0}
    worker = {"pid": 7, "current": True, "state": "ready", "started_at": 0.0, "hub": hub}
    pool_proc = {
        "pid": pool_pid,
        "current": True,
        "state": "ready",
        "started_at": 1.0,
        "started_wall": float(pool_pid),
        "hub": hub,
        "jobs": {"done": done, "queued": 3},
    }
    snap = _snap(now, 0)
    snap["supervisor"] = {
        "pools": ["default", "pdf"],
        "slots": [
            {**_slot(1, None), "processes": [worker]},
            {**_slot(2, "default"), "processes": [pool_proc]},
        ],
    }
    return snap


def _slot(slot_id: int, pool: str | None) -> dict[str, Any]:
    return {"id": slot_id, "state": "running", "restarts": 0, "last_exit": None, "pool": pool}


def test_pool_processes_are_in_their_pools_section_not_the_workers_table() -> None:
    figures = {7: Figures(1.0, 1000, 1.0), 8: Figures(2.0, 2000, 50.0)}
    totals = JobTotals()
    snap = _pooled(10.0, 5)
    assert [row["pid"] for row in worker_rows(snap, figures)] == [7]
    default, pdf = pool_sections(snap, figures, totals.update(snap))
    assert (default["name"], default["ready"], default["queued"], default["done"]) == (
        "default",
        1,
        3,
        5,
    )
    (row,) = default["processes"]
    assert (row["slot"], row["pid"], row["state"], row["cpu_percent"]) == (2, 8, "ready", 50.0)
    assert (row["jobs_queued"], row["jobs_done"]) == (3, 5)
    # a pool with no process (--pool pdf=0) still has its section, empty
    assert (pdf["name"], pdf["processes"], pdf["done"]) == ("pdf", [], 0)
    # the process replaced: its row is the new one's, the pool's total goes on
    snap = _pooled(11.0, 1, pool_pid=9)
    default = pool_sections(snap, figures, totals.update(snap))[0]
    assert [r["pid"] for r in default["processes"]] == [9] and default["done"] == 6
    # without pools, no section
    assert pool_sections(_snap(1.0, 0), figures, {}) == []


def test_history_has_each_pools_jobs_done_per_second() -> None:
    history = History()
    totals = JobTotals()
    first = history.add(_pooled(10.0, 5), {}, 1.0, totals.update(_pooled(10.0, 5)))
    assert first["jobs"] == {"default": 0, "pdf": 0}
    point = history.add(_pooled(12.0, 25), {}, 3.0, totals.update(_pooled(12.0, 25)))
    assert point["jobs"] == {"default": 10.0, "pdf": 0}
    # the pool process replaced: its successor's count adds to the total, no drop to 0
    snap = _pooled(13.0, 4, pool_pid=9)
    assert history.add(snap, {}, 4.0, totals.update(snap))["jobs"]["default"] == 4.0
    # without pools, no jobs
    assert history.add(_snap(14.0, 0), {}, 5.0)["jobs"] == {}


# -- over HTTP, against a real master ------------------------------------------------------------


def request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def first_event(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=20) as reply:
        assert reply.headers["content-type"] == "text/event-stream"
        while True:
            line = reply.readline()
            if line.startswith(b"data: "):
                return dict(json.loads(line[6:]))


def event_where(
    url: str, check: Callable[[dict[str, Any]], bool], within: float = 60.0
) -> dict[str, Any]:
    """The first event of the dashboard's feed (one a second) for which ``check`` holds, read
    within ``within`` seconds (a bound of its own: a thread is not cancelled by trio)."""
    deadline = time.monotonic() + within
    with urllib.request.urlopen(url, timeout=20) as reply:
        while (line := reply.readline()) and time.monotonic() < deadline:
            if line.startswith(b"data: "):
                state = dict(json.loads(line[6:]))
                if state.get("error") is None and check(state):
                    return state
    raise AssertionError(f"no such event in {within} s: {line[:2000]!r}")


JSON = {"Content-Type": "application/json"}


async def test_a_token_guards_everything_and_actions_are_logged(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    token = "not-guessable-42"
    args = ("observed:serve", "-w", "2", "--control", control, "--no-console")
    dashboard_args = ("--dashboard", "127.0.0.1:0", "--dashboard-token", token)
    with trio.fail_after(90):
        async with open_stereo(*args, *dashboard_args) as stereo:
            match = await stereo.wait_for(
                r"^\[observe\] dashboard on (http://\S+/) \(token required\)$"
            )
            base = match[0][1]
            assert token not in "\n".join(stereo.lines)  # not printed, not in the helper's argv
            await stereo.wait_for(r"^\[worker \d\] ready pid=", count=2)

            def without() -> list[int]:
                return [
                    request(base)[0],
                    request(base + "events")[0],
                    request(base + "api/action", b'{"action": "add", "count": 1}', JSON)[0],
                    request(base + "?token=wrong")[0],
                ]

            assert await trio.to_thread.run_sync(without) == [403] * 4
            # the page's script and style hold no data: a browser loads them without the token
            status, _ = await trio.to_thread.run_sync(request, base + "static/dashboard.js")
            assert status == 200
            status, page = await trio.to_thread.run_sync(request, f"{base}?token={token}")
            assert status == 200 and b'<table id="workers"' in page
            state = await trio.to_thread.run_sync(first_event, f"{base}events?token={token}")
            _, out, _ = await ctl("--control", control, "--json", "status")
            assert sorted(row["pid"] for row in state["workers"]) == sorted(
                row["pid"] for row in json.loads(out)
            )

            # a cross-site request is refused even with the token; the page's own is done
            action = f"{base}api/action?token={token}"
            evil = {**JSON, "Origin": "http://evil.example"}
            body = b'{"action": "add", "count": 1}'
            status, _ = await trio.to_thread.run_sync(request, action, body, evil)
            assert status == 403
            origin = {**JSON, "Origin": base.rstrip("/")}
            status, reply = await trio.to_thread.run_sync(request, action, body, origin)
            assert status == 200 and json.loads(reply)["result"] == {"added": [3]}
            await stereo.wait_for(r"^\[observe\] control: add 1 \(from 127\.0\.0\.1:\d+\)$")
            await stereo.wait_for(r"^\[worker 3\] ready pid=")
            # the master refuses: said to the page, logged
            body = b'{"action": "remove", "slot": 9}'
            status, reply = await trio.to_thread.run_sync(request, action, body, origin)
            assert status == 409 and "worker 9" in json.loads(reply)["error"]
            await stereo.wait_for(r"^\[observe\] control: remove 9 refused: ")
            refused = [line for line in stereo.lines if "refused GET / from" in line]
            assert refused, "a request without the token is logged"


async def _started(command: list[str], nursery: trio.Nursery) -> tuple[trio.Process, str]:
    """Start a command; its process and its first line (where it listens)."""
    process: trio.Process = await nursery.start(
        partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
    )
    assert process.stdout is not None
    seen = b""
    while b"\n" not in seen:
        chunk = await process.stdout.receive_some()
        assert chunk, seen
        seen += chunk
    return process, seen.split(b"\n")[0].decode()


def unix_get(path: str, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


async def test_stereo_dashboard_and_stereo_metrics_are_processes_of_their_own(
    tmp_path: Path,
) -> None:
    """Against a master started without them: where each listens, said on its first line."""
    control = str(tmp_path / "control.sock")
    metrics_path = str(tmp_path / "metrics.sock")
    with trio.fail_after(60):
        async with open_stereo(
            "observed:serve", "-w", "1", "--control", control, "--no-console"
        ) as stereo:
            await stereo.wait_for(r"^\[worker 1\] ready pid=")
            async with trio.open_nursery() as nursery:
                board, line = await _started(
                    stereo_command("dashboard", "--bind", "127.0.0.1:0", "--control", control),
                    nursery,
                )
                match = re.fullmatch(r"\[observe\] dashboard on (http://127\.0\.0\.1:\d+/)", line)
                assert match, line
                state = await trio.to_thread.run_sync(first_event, match[1] + "events")
                assert [row["slot"] for row in state["workers"]] == [1]
                exporter, line = await _started(
                    stereo_command(
                        "metrics", "--bind", f"unix:{metrics_path}", "--control", control
                    ),
                    nursery,
                )
                assert line == f"[observe] metrics on http://unix:{metrics_path}/metrics"
                assert os.stat(metrics_path).st_mode & 0o077 == 0  # owner-only
                reply = await trio.to_thread.run_sync(unix_get, metrics_path, "/healthz")
                assert reply.startswith(b"HTTP/1.1 200 OK") and b'"ready": 1' in reply
                board.terminate()
                exporter.terminate()


def _pool(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(pool for pool in state["pools"] if pool["name"] == name)


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=20) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_pools_processes_and_jobs_in_the_feed_and_the_metrics(tmp_path: Path) -> None:
    """tests/apps/pooljobs.py's round trip: 43 jobs in the default pool, 11 in pdf (one of them
    prints). The pool processes report their counts every heartbeat (--timeout 8: every 2 s)."""
    control = str(tmp_path / "control.sock")
    env = {"POOL_SCENARIO": "roundtrip", "POOL_TMP": str(tmp_path)}
    args = ("pooljobs:serve", "-w", "1", "--pool", "1", "--pool", "pdf=1", "--timeout", "8")
    observe = ("--dashboard", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
    with trio.fail_after(120):
        async with open_stereo(
            *args, *observe, "--control", control, "--no-console", env=env
        ) as stereo:
            board = (await stereo.wait_for(r"^\[observe\] dashboard on (http://\S+/)$"))[0][1]
            metrics = (await stereo.wait_for(r"^\[observe\] metrics on (http://\S+)$"))[0][1]
            await stereo.wait_for(r"^\[worker \d+\] RESULT ")

            def counted(state: dict[str, Any]) -> bool:
                return _pool(state, "default")["done"] == 43 and _pool(state, "pdf")["done"] == 11

            state = await trio.to_thread.run_sync(event_where, board + "events", counted)
            _, out, _ = await ctl("--control", control, "--json", "status")
            rows = json.loads(out)
            pool_pid = next(row["pid"] for row in rows if row["pool"] == "default")
            pool_slot = next(row["slot"] for row in rows if row["pool"] == "default")
            before = await trio.to_thread.run_sync(_scrape, metrics)

            # The default pool's process killed from outside: replaced, its jobs still counted.
            os.kill(pool_pid, signal.SIGKILL)

            def replaced(state: dict[str, Any]) -> bool:
                rows = _pool(state, "default")["processes"]
                return [(r["state"], r["pid"] != pool_pid) for r in rows] == [("ready", True)]

            after_state = await trio.to_thread.run_sync(event_where, board + "events", replaced)
            after = await trio.to_thread.run_sync(_scrape, metrics)

    # the feed: workers in their table, each pool's processes in its section
    assert [row["pid"] for row in state["workers"]] == [
        row["pid"] for row in rows if row["pool"] is None
    ]
    assert [r["pid"] for r in _pool(state, "default")["processes"]] == [pool_pid]
    assert [r["jobs_done"] for r in _pool(state, "pdf")["processes"]] == [11]
    assert set(state["point"]["jobs"]) == {"default", "pdf"}
    assert _pool(after_state, "default")["done"] == 43  # the new process's 0 added, not taken
    # the metrics
    slot = str(pool_slot)
    labels = {"slot": slot, "role": "pool", "pool": "default"}
    done = ("stereo_pool_jobs_done_total", frozenset({("pool", "default"), ("slot", slot)}))
    assert before[done] == 43 and after[done] == 43
    assert after[("stereo_worker_up", frozenset(labels.items()))] == 1
    killed = frozenset({**labels, "reason": "killed"}.items())
    assert after[("stereo_worker_restarts_total", killed)] == 1
    ready = {"role": "worker", "pool": "", "state": "ready"}
    assert after[("stereo_workers", frozenset(ready.items()))] == 1
    pdf_ready = frozenset({"role": "pool", "pool": "pdf", "state": "ready"}.items())
    assert after[("stereo_workers", pdf_ready)] == 1
