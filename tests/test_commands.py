"""Control commands as plain functions (stereo.control.commands), their parsing and their rendering.

The parsing and rendering tests need no process. The command tests run a real Master in this
trio loop (real worker processes, no control socket) and call the functions directly.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
import trio
from conftest import APPS, Output, wait_exited
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from stereo.control import commands, render, syntax
from stereo.control.commands import Context
from stereo.control.console import ConsoleCompleter
from stereo.control.render import format_help, format_result, format_status, human_duration
from stereo.control.sampler import Sampler
from stereo.control.syntax import UsageError, parse_line
from stereo.control.top import render_top
from stereo.errors import ControlError
from stereo.master.config import Settings
from stereo.master.lifecycle import ProcessState
from stereo.master.master import Master
from stereo.master.output import OutputSink
from stereo.snapshot import (
    HubStatistics,
    MasterSnapshot,
    PeerStatistics,
    ProcessSnapshot,
    SlotSnapshot,
    SupervisorSnapshot,
)
from stereo.wire.control import parse_signal

# -- parsing typed lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        ("status", "status", {}),
        ("  inspect 3 ", "inspect", {"id": 3}),
        ("add", "add", {"count": 1}),
        ("add 2", "add", {"count": 2}),
        ("remove", "remove", {}),
        ("remove 2 3", "remove", {"ids": [2, 3]}),
        ("remove -n 2", "remove", {"count": 2}),
        ("scale 5", "scale", {"workers": 5}),
        ("restart all", "restart", {}),
        ("restart 1 4", "restart", {"ids": [1, 4]}),
        ("kill 2", "kill", {"id": 2}),
        ("kill 2 usr1", "kill", {"id": 2, "signal": "usr1"}),
        (
            'broadcast {"reload":  true, "n": [1, 2]}',
            "broadcast",
            {"value": {"reload": True, "n": [1, 2]}},
        ),
        ("broadcast 42", "broadcast", {"value": 42}),
        ('broadcast "two  spaces"', "broadcast", {"value": "two  spaces"}),
        ("stats", "stats", {}),
        ("shutdown", "shutdown", {"mode": "graceful"}),
        ("shutdown quick", "shutdown", {"mode": "quick"}),
        ("help kill", "help", {"command": "kill"}),
        ("exit", "quit", {}),
        ("watch", "top", {}),
    ],
)
def test_parse_line(line: str, name: str, args: dict[str, Any]) -> None:
    parsed = parse_line(line)
    assert parsed is not None
    command, parsed_args = parsed
    assert (command.name, parsed_args) == (name, args)


def test_parse_line_empty() -> None:
    assert parse_line("   ") is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("inspect", "usage: inspect ID"),
        ("inspect one", "a worker id must be a whole number, not 'one'"),
        ("restart", "usage: restart ID... | restart all"),
        ("kill 1 SIGNOPE", "unknown signal 'SIGNOPE'"),
        ("broadcast {nope", "is not JSON"),
        ("broadcast", "usage: broadcast VALUE"),
        ("status now", "status takes no arguments"),
        ("shutdown later", "usage: shutdown [graceful|quick]"),
        ("remove -n", "usage: remove -n N"),
        # Values that JSON reads but that cannot be sent: one line each, never a traceback.
        ('broadcast "\\ud800"', "broadcast: the value cannot be sent: cannot encode str as CBOR"),
        ("broadcast " + "[" * 5000 + "]" * 5000, "the value is nested more than 256 levels deep"),
        ("broadcast " + "[" * 257 + "]" * 257, "the value is nested more than 256 levels deep"),
        ("broadcast " + "1" * 5000, "broadcast: cannot read the value: Exceeds the limit (4300"),
        ("inspect " + "1" * 5000, "a worker id must be a whole number, not '1111"),
    ],
)
def test_parse_line_errors_are_sentences(line: str, message: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse_line(line)
    assert message in str(info.value)


def test_broadcast_values_up_to_the_nesting_limit_are_sent() -> None:
    deepest = "[" * 256 + "]" * 256
    value = json.loads(deepest)
    assert parse_line(f"broadcast {deepest}") == (syntax.COMMANDS["broadcast"], {"value": value})


def test_parse_signal() -> None:
    assert parse_signal("TERM") == signal.SIGTERM
    assert parse_signal("sigkill") == signal.SIGKILL
    assert parse_signal("9") == 9
    assert parse_signal(10) == 10
    for bad in ("NOPE", "999", True, 3.5):
        with pytest.raises(ControlError):
            parse_signal(bad)  # type: ignore[arg-type]


def test_client_and_server_tables_agree() -> None:
    """Every command the console sends to the master has a handler there, and the master
    answers no command the console does not know."""
    in_master = {name for name, command in syntax.COMMANDS.items() if command.in_master}
    assert in_master == set(commands.HANDLERS)
    assert {"top", "help", "quit"} == set(syntax.COMMANDS) - in_master
    assert in_master == set(render.FORMATTERS)  # and each result has its text


# -- rendering ----------------------------------------------------------------------------------

ROW = {
    "slot": 1,
    "pid": 4242,
    "state": "ready",
    "current": True,
    "uptime": 75.5,
    "restarts": 2,
    "last_exit": "killed by SIGKILL",
    "rss": 30 * 1024 * 1024,
    "cpu_percent": 1.5,
    "messages_in": 10,
    "messages_out": 20,
    "outbox_bytes": 2048,
    "outbox_fill": 0.25,
}

STATS = {
    "pid": 100,
    "uptime": 3700.0,
    "workers": 1,
    "processes": 1,
    "peers": 1,
    "broadcasts": 5,
    "deliveries": 10,
    "bytes_in": 100,
    "bytes_out": 200,
    "cutoffs": 0,
    "respawns": 3,
    "next_seq": 6,
    "rates": {
        "broadcasts_per_s": 12000.0,
        "deliveries_per_s": 5.0,
        "bytes_in_per_s": 2048.0,
        "bytes_out_per_s": 0.0,
        "respawns_per_s": 0.0,
    },
    "master_rss": 20 * 1024 * 1024,
    "master_cpu_percent": 0.5,
    "stopping": False,
    "control_path": "/tmp/x.sock",
    "time": 0.0,
}


def test_format_status() -> None:
    idle = {
        **ROW,
        "slot": 2,
        "pid": None,
        "state": "failed",
        "current": False,
        "uptime": None,
        "rss": None,
        "cpu_percent": None,
        "last_exit": "exit 4 (app load error)",
    }
    text = format_status([ROW, idle])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["SLOT", "PID", "STATE"]
    assert lines[1].split() == [
        "1",
        "4242",
        "ready",
        "1m15s",
        "2",
        "30.0",
        "MiB",
        "1.5",
        "10",
        "20",
        "2.0",
        "KiB",
        "25%",
        "killed",
        "by",
        "SIGKILL",
    ]
    assert lines[2].split()[:3] == ["2", "-", "failed"]
    assert format_status([]) == "no workers"


def test_render_top_and_stats() -> None:
    frame = render_top([ROW], STATS)
    assert "master pid 100, up 1h01m, 1 workers" in frame
    assert "broadcasts 12.0k/s" in frame
    assert "4242" in frame
    assert "respawns    " in format_result("stats", STATS)


def test_format_results_and_help() -> None:
    assert format_result("add", {"added": [3, 4]}) == "added workers 3, 4"
    assert format_result("remove", {"removed": [2]}) == "removing 2 (draining gracefully)"
    assert format_result("restart", {"restarted": [1, 2]}) == "restarted 1, 2"
    assert format_result("scale", {"added": [], "removed": []}) == "already at that size"
    assert format_result("future", {"n": 1}) == '{\n  "n": 1\n}'
    assert "kill ID [SIGNAL]" in format_help()
    assert format_help("restart").startswith("restart ID... | restart all")
    assert human_duration(59.94) == "59.9s"
    assert human_duration(90000) == "1d01h"


def _completions(text: str, ids: list[int] | None = None) -> list[str]:
    completer = ConsoleCompleter(lambda: ids or [1, 2, 12])
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_completion() -> None:
    assert _completions("st") == ["status", "stats"]
    assert _completions("inspect ") == ["1", "2", "12"]
    assert _completions("inspect 1") == ["1", "12"]
    assert _completions("restart 1 ") == ["1", "2", "12"]
    assert _completions("restart a") == ["all"]
    assert _completions("kill 2 K") == ["KILL"]
    assert _completions("shutdown q") == ["quick"]
    assert _completions("help re") == ["remove", "restart"]
    assert _completions("broadcast ") == []


# -- the commands against plain data --------------------------------------------------------------

PEER = PeerStatistics(
    messages_in=3,
    messages_out=4,
    bytes_in=30,
    bytes_out=40,
    outbox_bytes=256,
    peak_outbox_bytes=512,
    cut_off_reason=None,
)


def process(pid: int, current: bool) -> ProcessSnapshot:
    return ProcessSnapshot(
        pid=pid,
        state="ready" if current else "draining",
        current=current,
        started_at=10.0,
        started_wall=1e9,
        ready_at=10.5,
        stop_requested=not current,
        last_heartbeat=11.0,
        boot_error=None,
        hub=PEER,
    )


def slot(slot_id: int, state: str, *processes: ProcessSnapshot) -> SlotSnapshot:
    return SlotSnapshot(
        id=slot_id,
        state=state,
        restarts=1,
        last_exit="exit 1",
        failed_reason="it keeps crashing" if state == "failed" else None,
        quick_failures=5 if state == "failed" else 0,
        setbacks=2 if state == "failed" else 0,
        processes=processes,
    )


class FakeMaster:
    """A Target that records what it is asked to do; its state is a fixed snapshot."""

    def __init__(self, *slots: SlotSnapshot) -> None:
        self.snap = MasterSnapshot(
            pid=os.getpid(),
            now=12.0,
            started_at=2.0,
            control_path="/tmp/x.sock",
            supervisor=SupervisorSnapshot(slots=slots, respawns=2, stopping=False),
            hub=HubStatistics(
                broadcasts=5,
                deliveries=10,
                bytes_in=100,
                bytes_out=200,
                cutoffs=0,
                peers=1,
                next_seq=6,
                outbox_limit=1024,
            ),
        )
        self.calls: list[tuple[Any, ...]] = []

    def snapshot(self) -> MasterSnapshot:
        return self.snap

    def add(self, count: int, pool: str | None = None) -> list[int]:
        self.calls.append(("add", count))
        return [9]

    def remove(self, slot_ids: list[int]) -> list[int]:
        self.calls.append(("remove", slot_ids))
        return slot_ids

    def highest_slots(self, count: int, pool: str | None = None) -> list[int]:
        return sorted(self.snap.supervisor.active_ids, reverse=True)[:count]

    def scale(self, workers: int, pool: str | None = None) -> tuple[list[int], list[int]]:
        self.calls.append(("scale", workers))
        return [], []

    async def restart(self, slot_ids: list[int] | None) -> list[int]:
        self.calls.append(("restart", slot_ids))
        return slot_ids or []

    def kill(self, slot_id: int, signum: int) -> int | None:
        self.calls.append(("kill", slot_id, signum))
        found = self.snap.supervisor.slot(slot_id)
        return found.current_pid if found else None

    def broadcast(self, payload: bytes) -> int:
        self.calls.append(("broadcast", payload))
        return 6

    def shutdown(self, graceful: bool) -> None:
        self.calls.append(("shutdown", graceful))

    def log(self, line: str) -> None:
        self.calls.append(("log", line))


NO_PID = 2**22 + 7  # above any pid Linux hands out (pid_max is at most 2**22)


def test_commands_read_the_snapshot() -> None:
    target = FakeMaster(
        slot(1, "running", process(NO_PID, True)),
        slot(2, "failed"),
        slot(3, "removed", process(NO_PID + 1, False)),  # removed, its process still draining
    )
    ctx = Context(target)
    rows = commands.status(ctx)
    assert [(r["slot"], r["pid"], r["state"], r["current"]) for r in rows] == [
        (1, NO_PID, "ready", True),
        (2, None, "failed", False),
        (3, NO_PID + 1, "draining", False),
    ]
    assert rows[0]["uptime"] == 2.0 and rows[0]["outbox_fill"] == 0.25
    assert rows[0]["rss"] is None and rows[0]["cpu_percent"] is None  # no such process
    assert rows[1]["last_exit"] == "it keeps crashing"

    info = commands.inspect(ctx, 1)
    assert info["current_pid"] == NO_PID
    (proc,) = info["processes"]
    assert (proc["ready_after"], proc["heartbeat_age"]) == (0.5, 1.0)
    assert proc["peak_outbox_bytes"] == 512
    assert commands.inspect(ctx, 2)["quick_failures"] == 5
    assert commands.inspect(ctx, 2)["setbacks"] == 2
    assert commands.inspect(ctx, 2)["quick_failures"] == 5

    with pytest.raises(ControlError, match=r"there is no worker 3 \(workers: 1, 2\)"):
        commands.inspect(ctx, 3)  # removed: only listed while it drains
    with pytest.raises(ControlError, match=r"worker 2 has no process right now \(failed\)"):
        commands.kill(ctx, 2)
    with pytest.raises(ControlError, match="no running worker 3"):
        commands.remove(ctx, [3])

    stats = commands.stats(ctx)
    assert (stats["uptime"], stats["workers"], stats["processes"]) == (10.0, 2, 2)
    assert stats["control_path"] == "/tmp/x.sock" and stats["master_rss"]


async def test_commands_act_through_the_target() -> None:
    target = FakeMaster(slot(1, "running", process(NO_PID, True)), slot(2, "running"))
    ctx = Context(target)
    assert commands.remove(ctx, count=1) == {"removed": [2]}
    assert commands.kill(ctx, 1, "usr1") == {"slot": 1, "pid": NO_PID, "signal": "SIGUSR1"}
    assert commands.broadcast(ctx, [1]) == {"seq": 6, "receivers": 1}
    assert await commands.restart(ctx, [1]) == {"restarted": [1]}
    assert commands.shutdown(ctx, "quick") == {"stopping": True, "graceful": False}
    assert target.calls == [
        ("remove", [2]),
        ("kill", 1, signal.SIGUSR1),
        ("broadcast", b"\x81\x01"),
        ("restart", [1]),
        ("log", "control: quick shutdown requested"),
        ("shutdown", False),
    ]
    target.snap = replace(target.snap, supervisor=replace(target.snap.supervisor, stopping=True))
    for refused in (lambda: commands.add(ctx), lambda: commands.scale(ctx, 3)):
        with pytest.raises(ControlError, match="shutting down"):
            refused()


def test_id_lists_are_deduplicated_checked_whole_and_errors_stay_short() -> None:
    target = FakeMaster(*(slot(i, "running") for i in range(1, 1025)))
    ctx = Context(target)
    assert commands.remove(ctx, [3, 5, 3]) == {"removed": [3, 5]}
    with pytest.raises(ControlError, match=r"^remove: the list of worker ids is empty$"):
        commands.remove(ctx, [])
    with pytest.raises(ControlError) as info:
        commands.remove(ctx, [2, *range(2000, 2020)])
    assert str(info.value) == (
        "remove: no running worker 2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009"
        " and 10 more (workers: 1-1024)"
    )
    assert target.calls == [("remove", [3, 5])]  # nothing removed on a refusal
    assert commands._id_ranges([1, 2, 4, 5, 6, 9]) == "1, 2, 4-6, 9"


def test_sampler_rates() -> None:
    target = FakeMaster()
    sampler = Sampler()
    sampler.sample(target.snap)
    assert set(sampler.rates.values()) == {0.0}
    hub = replace(target.snap.hub, broadcasts=25, bytes_out=1200)
    sampler.sample(replace(target.snap, now=14.0, hub=hub))
    assert sampler.rates["broadcasts_per_s"] == 10.0
    assert sampler.rates["bytes_out_per_s"] == 500.0
    assert sampler.rates["respawns_per_s"] == 0.0


# -- the commands against a real master ---------------------------------------------------------


async def all_ready(master: Master) -> None:
    """Every live process is in state READY (set by the supervisor after the READY frame)."""
    supervisor = master.supervisor
    while not all(proc.state is ProcessState.READY for proc in supervisor.live):
        await supervisor.changed.wait()


@asynccontextmanager
async def running_master(workers: int) -> AsyncIterator[tuple[Master, Context, Output]]:
    settings = Settings(app="control_app:serve", app_dir=str(APPS), workers=workers)
    output = Output()
    master = Master(settings, [], OutputSink(writer=output.write))
    async with trio.open_nursery() as nursery:
        await nursery.start(master.run)
        await output.wait_for(r"^\[worker \d+\] ready$", workers)
        await all_ready(master)
        try:
            yield master, master.control.context, output
        finally:
            master.shutdown(graceful=False)


async def test_commands_on_a_real_master() -> None:
    with trio.fail_after(30):
        async with running_master(2) as (master, ctx, output):
            ctx.sample()
            rows = commands.status(ctx)
            assert [(r["slot"], r["state"]) for r in rows] == [(1, "ready"), (2, "ready")]
            assert all(r["rss"] and r["pid"] for r in rows)

            assert commands.add(ctx, 2) == {"added": [3, 4]}
            await output.wait_for(r"^\[worker [34]\] ready$", 2)
            await all_ready(master)
            assert len(commands.status(ctx)) == 4

            info = commands.inspect(ctx, 3)
            assert info["processes"][0]["state"] == "ready"
            assert "stereo.worker" in " ".join(info["processes"][0]["cmdline"])

            doomed = master.supervisor.slots[4].current
            assert doomed is not None
            await doomed.ready_event.wait()  # its SIGTERM handler is installed from then on
            assert commands.remove(ctx) == {"removed": [4]}
            await doomed.ended.wait()
            assert doomed.returncode == 0  # drained, not killed

            old = {r["pid"] for r in commands.status(ctx)}
            assert (await commands.restart(ctx)) == {"restarted": [1, 2, 3]}
            assert not old & {r["pid"] for r in commands.status(ctx) if r["current"]}

            sent = commands.broadcast(ctx, {"x": [1, 2]})
            assert sent["seq"] == 1 and sent["receivers"] >= 3  # draining ones may still listen
            await output.wait_for(r'^\[worker [123]\] received \{"x": \[1, 2\]\} from 0$', 3)
            assert commands.stats(ctx)["broadcasts"] == 1

            assert commands.scale(ctx, 2) == {"added": [], "removed": [3]}

            mistakes: list[tuple[Callable[[], object], str]] = [
                (lambda: commands.inspect(ctx, 9), "there is no worker 9 (workers: 1-3)"),
                (lambda: commands.remove(ctx, [7]), "no running worker 7"),
                (lambda: commands.kill(ctx, 1, "NOPE"), "unknown signal 'NOPE'"),
                (lambda: commands.add(ctx, 0), "at least 1"),
                (lambda: commands.shutdown(ctx, "later"), "mode must be"),
                (lambda: commands.broadcast(ctx, b"x" * 2_000_000), "limit is"),
            ]
            for call, message in mistakes:
                with pytest.raises(ControlError, match=None) as info_:
                    call()
                assert message in str(info_.value)

            pid = commands.kill(ctx, 1, "KILL")["pid"]
            await wait_exited(pid)


async def test_execute_checks_wire_arguments() -> None:
    with trio.fail_after(30):
        async with running_master(1) as (master, ctx, _):
            for name, args, message in [
                ("nope", {}, "unknown command 'nope'"),
                (5, {}, "'command' must be a string"),
                ("status", [1], "'args' must be a map"),
                ("inspect", {"id": "1"}, "'id' must be an integer"),
                ("inspect", {"id": True}, "'id' must be an integer"),
                ("remove", {"ids": [1, "x"]}, "'ids' must be a list of integers"),
                ("broadcast", {}, "'value' is missing"),
                ("top", {}, "unknown command 'top'"),  # client-side commands do not exist here
                # An empty list is a mistake, not "the default choice" (it removed worker 1).
                ("remove", {"ids": []}, "remove: the list of worker ids is empty"),
                ("restart", {"ids": []}, "restart: the list of worker ids is empty"),
                # CBOR bignums: out of range, said as such (some crashed the command).
                ("inspect", {"id": 2**64}, "'id' must be an integer (of 64 bits at most)"),
                ("add", {"count": -(2**70)}, "'count' must be an integer (of 64 bits at most)"),
                ("remove", {"ids": [10**5000]}, "'ids' must be a list of integers (of 64 bits"),
                ("kill", {"id": 1, "signal": 10**5000}, "'signal' must be a name or a number"),
                ("kill", {"id": 1, "signal": "9" * 5000}, "unknown signal '99999"),
                ("kill", {"id": 1, "signal": "x" * 10**6}, "unknown signal 'xxxx"),
            ]:
                with pytest.raises(ControlError, match=None) as info:
                    await commands.execute(ctx, name, args)
                assert message in str(info.value)
            assert (await commands.execute(ctx, "status", None))[0]["slot"] == 1
            # Repeated ids are one request for that worker, not three.
            assert await commands.execute(ctx, "restart", {"ids": [1, 1, 1]}) == {"restarted": [1]}
            result = await commands.execute(ctx, "shutdown", {"mode": "quick"})
            assert result == {"stopping": True, "graceful": False}
            await master.supervisor.idle.wait()


def test_a_bridged_broadcast_says_the_broker_numbers_it() -> None:
    from stereo.control.render import format_result

    assert format_result("broadcast", {"seq": 7, "receivers": 2}) == "broadcast seq 7 to 2 workers"
    assert format_result("broadcast", {"seq": 0, "receivers": 2}) == (
        "broadcast handed to the broker bridge"
    )
