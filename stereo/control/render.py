"""Text rendering of command results, shared by the console, ``stereo ctl`` and ``stereo top``.

Pure functions from the data the commands return (docs/console.md, "JSON output") to strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..logs import source_prefix
from .pools import format_grouped
from .syntax import COMMANDS, lookup


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def human_rate(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


STATUS_HEADERS = (
    "SLOT",
    "PID",
    "STATE",
    "UPTIME",
    "RESTARTS",
    "MEM",
    "CPU%",
    "MSGS IN",
    "MSGS OUT",
    "OUTBOX",
    "LAST EXIT",
)


def format_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no workers"
    if any(row.get("pool") is not None for row in rows):
        return format_grouped(rows, _status_table)
    return _status_table(rows)


def _status_table(rows: list[dict[str, Any]]) -> str:
    cells = []
    for row in rows:
        state = row["state"] + ("" if row["current"] or row["pid"] is None else " (old)")
        cpu = row["cpu_percent"]
        fill = row["outbox_fill"] or 0.0
        cells.append(
            (
                str(row["slot"]),
                str(row["pid"] or "-"),
                state,
                human_duration(row["uptime"]),
                str(row["restarts"]),
                human_bytes(row["rss"]),
                "-" if cpu is None else f"{cpu:.1f}",
                str(row["messages_in"]),
                str(row["messages_out"]),
                f"{human_bytes(row['outbox_bytes'])} {fill * 100:.0f}%",
                row["last_exit"] or "-",
            )
        )
    return table(STATUS_HEADERS, cells, right={0, 1, 3, 4, 5, 6, 7, 8, 9})


def format_stats(stats: dict[str, Any]) -> str:
    rates = stats["rates"]
    lines = [
        f"master pid {stats['pid']}, up {human_duration(stats['uptime'])},"
        f" {stats['workers']} workers ({stats['processes']} processes, {stats['peers']} connected)"
        f"{', STOPPING' if stats['stopping'] else ''}",
        f"broadcasts  {stats['broadcasts']:>12}  {human_rate(rates['broadcasts_per_s']):>8}/s",
        f"deliveries  {stats['deliveries']:>12}  {human_rate(rates['deliveries_per_s']):>8}/s",
        f"bytes in    {human_bytes(stats['bytes_in']):>12}"
        f"  {human_bytes(rates['bytes_in_per_s']):>10}/s",
        f"bytes out   {human_bytes(stats['bytes_out']):>12}"
        f"  {human_bytes(rates['bytes_out_per_s']):>10}/s",
        f"cut-offs    {stats['cutoffs']:>12}",
        f"respawns    {stats['respawns']:>12}",
        f"master      {human_bytes(stats['master_rss']):>12}"
        f"  {stats['master_cpu_percent']:.1f}% CPU",
    ]
    bridge = stats.get("bridge")
    if bridge:
        lines.append(format_bridge(bridge))
    return "\n".join(lines)


def format_bridge(bridge: dict[str, Any]) -> str:
    state = "connected" if bridge["connected"] else "NOT CONNECTED"
    seq = bridge["next_seq"] if bridge["next_seq"] is not None else "-"
    line = (
        f"bridge      {bridge['url']} {bridge['name']!r}: {state}, next seq {seq},"
        f" {bridge['pending_batches']} batches waiting ({human_bytes(bridge['pending_bytes'])}),"
        f" {bridge['batches_out']} out / {bridge['entries_in']} in,"
        f" {bridge['restarts']} restarts, {bridge['resets']} resets"
    )
    if bridge["last_reset"]:
        line += f" (last: {bridge['last_reset']})"
    if bridge.get("broker_error"):
        line += f"; broker away: {bridge['broker_error']}"
    return line


def format_inspect(info: dict[str, Any]) -> str:
    lines = [
        f"worker {info['slot']}: {info['state']}"
        + (" (being removed)" if info["retiring"] else ""),
        f"  restarts        {info['restarts']}",
        f"  last exit       {info['last_exit'] or '-'}",
    ]
    if info["failed_reason"]:
        lines.append(f"  failed          {info['failed_reason']}")
    if info["quick_failures"]:
        lines.append(f"  quick failures  {info['quick_failures']}")
    if info.get("setbacks"):
        lines.append(
            f"  setbacks        {info['setbacks']} (outside kills, cut-offs, failed starts)"
        )
    for proc in info["processes"]:
        role = "current" if proc["current"] else "old"
        lines += [
            f"  process {proc['pid']} ({role}, {proc['state']})",
            f"    uptime          {human_duration(proc['uptime'])}"
            + (
                f" (ready after {proc['ready_after']:.3f}s)"
                if proc.get("ready_after") is not None
                else ""
            ),
            f"    memory          {human_bytes(proc['rss'])}",
            f"    cpu             {'-' if proc['cpu_percent'] is None else proc['cpu_percent']}%",
            f"    messages        {proc['messages_in']} in, {proc['messages_out']} out",
            f"    bytes           {human_bytes(proc['bytes_in'])} in,"
            f" {human_bytes(proc['bytes_out'])} out",
            f"    outbox          {human_bytes(proc['outbox_bytes'])}"
            f" ({proc['outbox_fill'] * 100:.1f}% of the limit),"
            f" peak {human_bytes(proc['peak_outbox_bytes'])}",
            f"    last heartbeat  {proc['heartbeat_age']:.1f}s ago",
        ]
        if "threads" in proc:
            lines.append(f"    threads, fds    {proc['threads']}, {proc['open_files']}")
            lines.append(f"    command         {' '.join(proc['cmdline'])}")
        if proc["stop_requested"]:
            lines.append("    draining        yes")
        if proc["cut_off_reason"]:
            lines.append(f"    cut off         {proc['cut_off_reason']}")
        if proc["boot_error"]:
            lines.append(f"    boot error      {proc['boot_error']}")
    if not info["processes"]:
        lines.append("  no process")
    return "\n".join(lines)


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


def _format_added(result: dict[str, Any]) -> str:
    return f"added worker{'s' if len(result['added']) != 1 else ''} {_ids(result['added'])}"


def _format_removed(result: dict[str, Any]) -> str:
    if not result["removed"]:
        return "nothing to remove"
    return f"removing {_ids(result['removed'])} (draining gracefully)"


def _format_scaled(result: dict[str, Any]) -> str:
    parts = []
    if result["added"]:
        parts.append(f"added {_ids(result['added'])}")
    if result["removed"]:
        parts.append(f"removing {_ids(result['removed'])} (draining gracefully)")
    return "; ".join(parts) or "already at that size"


def _format_restarted(result: dict[str, Any]) -> str:
    if not result["restarted"]:
        return "nothing restarted"
    return f"restarted {_ids(result['restarted'])}"


def _format_killed(result: dict[str, Any]) -> str:
    return f"sent {result['signal']} to worker {result['slot']} (pid {result['pid']})"


def _format_broadcast(result: dict[str, Any]) -> str:
    if not result["seq"]:  # a bridged hub: the broker numbers it, every hub's workers get it
        return "broadcast handed to the broker bridge"
    return f"broadcast seq {result['seq']} to {result['receivers']} workers"


def _format_shutdown(result: dict[str, Any]) -> str:
    return "master is stopping " + ("gracefully" if result["graceful"] else "now")


def format_log_line(line: dict[str, Any]) -> str:
    """A line of ``logs`` as the master printed it with --log-format text."""
    if line["source"] == "master":
        return f"{line['time']} {line['level'].upper()} [stereo] {line['message']}"
    prefix = source_prefix(line["worker"], line["pid"], line["old"], line.get("pool"))
    return f"{prefix}{line['message']}"


def format_logs(result: dict[str, Any]) -> str:
    lines = [format_log_line(line) for line in result["lines"]]
    if result["missed"]:
        lines.insert(0, f"({result['missed']} lines were dropped from the master's buffer here)")
    return "\n".join(lines) if lines else "(no lines)"


#: Command name -> the text for its result; one entry per command that runs in the master.
FORMATTERS: dict[str, Callable[[Any], str]] = {
    "status": format_status,
    "inspect": format_inspect,
    "add": _format_added,
    "remove": _format_removed,
    "scale": _format_scaled,
    "restart": _format_restarted,
    "kill": _format_killed,
    "broadcast": _format_broadcast,
    "stats": format_stats,
    "shutdown": _format_shutdown,
    "snapshot": lambda result: json.dumps(result, indent=2, sort_keys=True),
    "logs": format_logs,
}


def format_result(command: str, result: Any) -> str:
    """The text the console and ``ctl`` print for a successful command (JSON for a command this
    client does not know how to show)."""
    formatter = FORMATTERS.get(command)
    if formatter is None:
        return json.dumps(result, indent=2, sort_keys=True)
    return formatter(result)


def format_help(name: str | None = None) -> str:
    if name is not None:
        command = lookup(name)
        text = f"{command.usage}\n  {command.summary}"
        if command.details:
            text += f"\n  {command.details}"
        if command.aliases:
            text += f"\n  also: {', '.join(command.aliases)}"
        return text
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"  {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    return "commands:\n" + "\n".join(lines) + "\n`help COMMAND` for details; Tab completes."
