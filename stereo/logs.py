"""The master's log as data (pure): how a line looks (``text`` or ``json``) and the ring of recent
lines that ``stereo logs`` reads (docs/logging.md).

text, the master's own line: ``2026-11-30T03:13:07.123Z INFO [stereo] listening on ...``; a
worker's line as it wrote it, after ``[worker N] ``, or ``[worker N old pid P] `` once a newer
process of the same slot has started (a restart: the old one drains while the new one serves).

json, one object a line: ``time`` (ISO 8601, UTC), ``level``, ``source`` (``master`` or
``worker``), ``worker`` (its id, or null), ``pid``, ``stream`` (``stdout``/``stderr``, null for
the master), ``old`` and ``message``.
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


def worker_prefix(worker: int, pid: int, old: bool) -> bytes:
    return (f"[worker {worker} old pid {pid}] " if old else f"[worker {worker}] ").encode()


def json_line(
    when: float,
    level: str,
    source: str,
    worker: int | None,
    pid: int,
    stream: str | None,
    old: bool,
    message: str,
) -> str:
    record = {
        "time": iso_time(when),
        "level": level,
        "source": source,
        "worker": worker,
        "pid": pid,
        "stream": stream,
        "old": old,
        "message": message,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


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

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as ``stereo logs --json`` prints it and the control protocol carries it."""
        return {
            "seq": self.seq,
            "time": iso_time(self.time),
            "level": self.level,
            "source": "master" if self.worker is None else "worker",
            "worker": self.worker,
            "pid": self.pid,
            "stream": self.stream,
            "old": self.old,
            "message": self.message.decode(errors="replace"),
        }


@dataclass(frozen=True, slots=True)
class LogSlice:
    lines: list[LogLine]
    next: int  # the cursor to read on from (``after``)
    missed: int  # lines (of any source) that left the ring before they could be read


class LogRing:
    """The last :data:`RING_LINES` lines (at most :data:`RING_BYTES` of messages), numbered from
    1 in the order they arrived. Reading takes a cursor (the last number seen), so a reader that
    fell behind learns how many lines it missed instead of holding any of them in the master."""

    def __init__(self, lines: int = RING_LINES, size: int = RING_BYTES) -> None:
        self.max_lines = lines
        self.max_bytes = size
        self._lines: deque[LogLine] = deque()
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
        self.last_seq += 1
        self._lines.append(LogLine(self.last_seq, when, level, worker, pid, stream, old, message))
        self._bytes += len(message)
        while len(self._lines) > self.max_lines or (
            self._bytes > self.max_bytes and len(self._lines) > 1
        ):
            self._bytes -= len(self._lines.popleft().message)

    def read(self, after: int | None, ids: Iterable[int] | None, limit: int) -> LogSlice:
        """Up to ``limit`` lines after cursor ``after``, oldest first; with ``after`` None, the
        last ``limit`` lines. ``ids``: only these workers' lines (0 is the master)."""
        wanted = None if ids is None else frozenset(ids)

        def matches(line: LogLine) -> bool:
            return wanted is None or (line.worker or 0) in wanted

        if after is None:
            found = [line for line in reversed(self._lines) if matches(line)][:limit]
            return LogSlice(found[::-1], self.last_seq, 0)
        after = min(max(after, 0), self.last_seq)  # a cursor of another master's: from now on
        first = self._lines[0].seq if self._lines else self.last_seq + 1
        missed = max(0, first - after - 1)
        lines: list[LogLine] = []
        for line in itertools.islice(self._lines, max(0, after + 1 - first), None):
            if matches(line):
                lines.append(line)
                if len(lines) == limit:
                    return LogSlice(lines, line.seq, missed)
        return LogSlice(lines, self.last_seq, missed)
