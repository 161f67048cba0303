"""The entries a JetStream stream republished as it stored them, kept by stream seq for the
reader until it reads them (pure: no I/O). An entry that comes this way is handed to a waiting
reader without asking the stream for it; one that does not (the feed dropped it, the reader was
busy past the limit, its subscription came later) is read from the stream as before, so the
feed only saves round trips and never decides what is delivered."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

STREAM_SEQUENCE = "Nats-Sequence"  # the header RePublish adds: the entry's stream seq


class Stored:
    """Republished entries from the reader's position on, at most ``limit`` of them, of a
    stream that keeps ``retention`` entries."""

    def __init__(self, limit: int, retention: int) -> None:
        self.limit = limit
        self.retention = retention
        self.newest = 0  # the highest stream seq republished (kept or not)
        self._floor = 0  # what is below is read already: not kept
        self._by_seq: dict[int, tuple[Mapping[str, str] | None, bytes]] = {}

    def put(self, headers: Mapping[str, str] | None, data: bytes) -> None:
        """One republished message; kept if it says its stream seq, and it is ahead."""
        text = (headers or {}).get(STREAM_SEQUENCE, "")
        if not text.isdigit():
            return
        seq = int(text)
        self.newest = max(self.newest, seq)
        if seq >= self._floor and len(self._by_seq) < self.limit:
            self._by_seq[seq] = (headers, data)

    def take(self, start: int) -> Iterator[tuple[int, Mapping[str, str] | None, bytes]]:
        """The kept entries at stream seqs ``start``, ``start + 1``... as far as they run
        without a hole, each forgotten as it is handed over; what is below ``start`` is
        dropped (the reader is past it). Nothing if the stream has trimmed ``start`` by now
        (``retention`` entries behind the newest): a reader that far behind hears it from the
        stream, as a Gap, as if there were no feed."""
        self._floor = start
        if start <= self.newest - self.retention:
            return
        if any(seq < start for seq in self._by_seq):
            self._by_seq = {seq: kept for seq, kept in self._by_seq.items() if seq >= start}
        while (kept := self._by_seq.pop(start, None)) is not None:
            self._floor = start + 1
            yield start, *kept
            start += 1

    def forget(self) -> None:
        """Everything kept (another connection, another position, maybe another stream)."""
        self._by_seq.clear()
        self._floor = self.newest = 0

    def __len__(self) -> int:
        return len(self._by_seq)
