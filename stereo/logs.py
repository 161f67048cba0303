"""The master's log as data (pure): how a line looks (``text`` or ``json``) and the ring of recent
lines that ``stereo logs`` reads (docs/logging.md).

text, the master's own line: ``2026-11-30T03:13:07.123Z INFO [stereo] listening on ...``; a
worker's line as it wrote it, after ``[worker N] ``, or ``[worker N old pid P] `` once a newer
process of the same slot has started (a restart: the old one drains while the new one serves);
a pool process's line after ``[pool NAME N] `` (docs/pool.md), NAME its pool.

json, one object a line: ``time`` (ISO 8601, UTC), ``level``, ``source`` (``master``,
``worker`` or ``pool``), ``worker`` (its id, or null), ``pid``, ``stream`` (``stdout``/``stderr``,
null for the master), ``old`` and ``message``; a pool process's lines add ``pool``, its name.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: What the ring keeps: the last this many lines, and no more than this many bytes of messages.
RING_LINES = 1000
RING_BYTES = 1024 * 1024
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def iso_time(when: float) -> str:
    """Seconds since the epoch -> ``2026-11-30T03:13:07.123Z``."""
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def worker_prefix(worker: int, pid: int, old: bool, pool: str | None = None) -> bytes:
    return source_prefix(worker, pid, old, pool).encode()


def source_prefix(worker: int, pid: int, old: bool, pool: str | None) -> str:
    """``[worker N] ``, ``[pool NAME N] `` for a pool process, `` old pid P`` before ``]``."""
    who = f"worker {worker}" if pool is None else f"pool {pool} {worker}"
    return f"[{who} old pid {pid}] " if old else f"[{who}] "


def json_line(
    when: float,
    level: str,
    source: str,
    worker: int | None,
    pid: int,
    stream: str | None,
    old: bool,
    message: str,
    pool: str | None = None,
) -> str:
    record: dict[str, Any] = {
        "time": iso_time(when),
        "level": level,
        "source": source if pool is None else "pool",
        "worker": worker,
        "pid": pid,
        "stream": stream,
        "old": old,
    }
    if pool is not None:
        record["pool"] = pool
    record["message"] = message  # last: json_lines appends each line's message to the rest
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def json_lines(
    when: float,
    worker: int,
    pid: int,
    stream: str,
    old: bool,
    messages: list[bytes],
    pool: str | None = None,
) -> bytes:
    """Worker lines read at one time as json lines (those of :func:`json_line`): the fields
    they share are encoded once, the messages one by one."""
    head = json_line(when, "info", "worker", worker, pid, stream, old, "", pool)
    head = head.removesuffix('""}')  # ...,"message":
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    return "".join(
        f"{head}{dumps(message.decode(errors='replace'))}}}\n" for message in messages
    ).encode()


class TextFormatter(logging.Formatter):
    """The master's own lines in the text format."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [stereo] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """The master's own lines in the json format."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return json_line(
            record.created, level, "master", None, record.process or 0, None, False,
            record.getMessage(),
        )  # fmt: skip


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line in the ring: the master's own (``worker`` None) or a worker's."""

    seq: int
    time: float  # seconds since the epoch
    level: str
    worker: int | None
    pid: int
    stream: str | None
    old: bool
    message: bytes
    pool: str | None = None  # a pool process's line: its pool

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as ``stereo logs --json`` prints it and the control protocol carries it."""
        source = "master" if self.worker is None else "worker" if self.pool is None else "pool"
        line = {
            "seq": self.seq,
            "time": iso_time(self.time),
            "level": self.level,
            "source": source,
            "worker": self.worker,
            "pid": self.pid,
            "stream": self.stream,
            "old": self.old,
            "message": self.message.decode(errors="replace"),
        }
        if self.pool is not None:
            line["pool"] = self.pool
        return line


@dataclass(frozen=True, slots=True)
class LogSlice:
    lines: list[LogLine]
    next: int  # the cursor to read on from (``after``)
    missed: int  # lines (of any source) that left the ring before they could be read


class LogRing:
    """The last :data:`RING_LINES` lines (at most :data:`RING_BYTES` of messages), numbered from
    1 in the order they arrived. Reading takes a cursor (the last number seen), so a reader that
    fell behind learns how many lines it missed instead of holding any of them in the master.

    Lines are kept as plain tuples, added a chunk at a time (:meth:`extend`): a worker flooding
    its stdout costs the master a fraction of a microsecond a line here."""

    def __init__(self, lines: int = RING_LINES, size: int = RING_BYTES) -> None:
        self.max_lines = lines
        self.max_bytes = size
        # (seq, time, level, worker, pid, stream, old, message, pool), as LogLine's fields
        self._lines: deque[
            tuple[int, float, str, int | None, int, str | None, bool, bytes, str | None]
        ]
        self._lines = deque()
        self._bytes = 0
        self.last_seq = 0

    def append(
        self,
        when: float,
        level: str,
        worker: int | None,
        pid: int,
        stream: str | None,
        old: bool,
        message: bytes,
    ) -> None:
        self.extend(when, level, worker, pid, stream, old, [message])

    def extend(
        self,
        when: float,
        level: str,
        worker: int | None,
        pid: int,
        stream: str | None,
        old: bool,
        messages: list[bytes],
        pool: str | None = None,
    ) -> None:
        """Lines of one source read at one time."""
        seq = self.last_seq
        self._lines.extend(
            (seq := seq + 1, when, level, worker, pid, stream, old, message, pool)
            for message in messages
        )
        self.last_seq = seq
        self._bytes += sum(map(len, messages))
        lines = self._lines
        while len(lines) > self.max_lines or (self._bytes > self.max_bytes and len(lines) > 1):
            self._bytes -= len(lines.popleft()[7])

    def read(self, after: int | None, ids: Iterable[int] | None, limit: int) -> LogSlice:
        """Up to ``limit`` lines after cursor ``after``, oldest first; with ``after`` None, the
        last ``limit`` lines. ``ids``: only these workers' lines (0 is the master)."""
        wanted = None if ids is None else frozenset(ids)

        def matches(entry: tuple[Any, ...]) -> bool:
            return wanted is None or (entry[3] or 0) in wanted

        if after is None:
            found = [LogLine(*e) for e in reversed(self._lines) if matches(e)][:limit]
            return LogSlice(found[::-1], self.last_seq, 0)
        after = min(max(after, 0), self.last_seq)  # a cursor of another master's: from now on
        first = self._lines[0][0] if self._lines else self.last_seq + 1
        missed = max(0, first - after - 1)
        lines: list[LogLine] = []
        for entry in itertools.islice(self._lines, max(0, after + 1 - first), None):
            if matches(entry):
                lines.append(LogLine(*entry))
                if len(lines) == limit:
                    return LogSlice(lines, entry[0], missed)
        return LogSlice(lines, self.last_seq, missed)
