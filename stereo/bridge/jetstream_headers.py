"""How a batch rides in one JetStream message, and the arithmetic of its global frame seqs. Pure:
no nats-py, no event loop, so the codec is tested byte by byte without a server.

A hub appends to its own subject (``stereo.NAME.HUB_ID``). A message carries the batch's frames
as its payload and these headers:

- ``Nats-Msg-Id: {hub_id}-{number}``: the stream's duplicate window drops a resend (and past
  that window, the hub's own subject does: see jetstream.py);
- ``Nats-Expected-Last-Sequence: {stream seq of the previous entry}`` (0 on an empty stream):
  the server refuses the append if another one got in first, so ``Stereo-First`` below, computed
  from that previous entry, can never be claimed twice;
- ``Stereo-First``, ``Stereo-Count``: the global seqs of the frames are ``first .. first+count-1``;
- ``Stereo-Hub``, ``Stereo-Number``: who appended it (the Entry's hub_id and number: of the
  last batch, when one message carries several, see :func:`merge`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import StereoError
from .broker import Batch, Entry

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
FIRST = "Stereo-First"
COUNT = "Stereo-Count"
HUB = "Stereo-Hub"
NUMBER = "Stereo-Number"

# A subject token and a stream name share these characters; anything else (dots, wildcards,
# spaces) would change what the subject matches or make an invalid stream name.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")
# A header value travels on a text line: no spaces at its ends (parsers strip them), no CR/LF.
_HUB_ID = re.compile(r"[\x21-\x7e]{1,200}")


class MalformedEntry(StereoError, ValueError):
    """A message in the stream that is not a stereo entry (a foreign publisher on the subject,
    a header missing or not a number): its frames cannot be numbered."""


def stream_names(name: str) -> tuple[str, str]:
    """The stream and the subject prefix for ``--bridge-name NAME``: ``STEREO_NAME``,
    ``stereo.NAME`` (the stream holds ``stereo.NAME.*``, one subject per hub)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bridge name {name!r}: use letters, digits, '_' and '-' only")
    return f"STEREO_{name}", f"stereo.{name}"


def every_hub(prefix: str) -> str:
    """The stream's subjects: every hub's subject under ``prefix``."""
    return f"{prefix}.*"


def stored_subjects(prefix: str) -> str:
    """Where the stream republishes each entry once stored (``stored.stereo.NAME.HUB``, with
    its stream seq in ``Nats-Sequence``), for waiting readers: none of the stream's subjects."""
    return f"stored.{every_hub(prefix)}"


def hub_subject(prefix: str, hub_id: str) -> str:
    """The subject ``hub_id`` appends to: the stream's last message on it is that hub's last
    batch, which is how a resend is recognised after the duplicate window (jetstream.py)."""
    if not _NAME.fullmatch(hub_id):
        raise ValueError(f"hub id {hub_id!r}: letters, digits, '_' and '-' only")
    return f"{prefix}.{hub_id}"


def encode_headers(batch: Batch, first: int, after: int) -> dict[str, str]:
    """The headers appending ``batch`` as frames ``first..`` right after stream seq ``after``."""
    if not _HUB_ID.fullmatch(batch.hub_id):
        raise ValueError(f"hub id {batch.hub_id!r}: printable ASCII without spaces only")
    if batch.count < 1:
        raise ValueError("a batch holds at least one frame")
    if first < 1 or after < 0:
        raise ValueError(f"first {first} and previous stream seq {after} out of range")
    return {
        MSG_ID: f"{batch.hub_id}-{batch.number}",
        EXPECTED_LAST_SEQUENCE: str(after),
        FIRST: str(first),
        COUNT: str(batch.count),
        HUB: batch.hub_id,
        NUMBER: str(batch.number),
    }


def _number(headers: Mapping[str, str], name: str, minimum: int) -> int:
    raw = headers.get(name)
    # int() alone would accept " 7", "+7" and "7_0": a header is stereo's or it is foreign.
    if raw is None or not raw.isascii() or not raw.isdigit():
        raise MalformedEntry(f"header {name} is {raw!r}, not a number")
    value = int(raw)
    if value < minimum:
        raise MalformedEntry(f"header {name} is {value}, below {minimum}")
    return value


def decode_entry(headers: Mapping[str, str] | None, payload: bytes | None) -> Entry:
    """The Entry a stored message carries; MalformedEntry if it is not one of stereo's."""
    if headers is None:
        raise MalformedEntry("a message without headers")
    hub_id = headers.get(HUB)
    if not hub_id:
        raise MalformedEntry(f"header {HUB} is missing")
    return Entry(
        first_seq=_number(headers, FIRST, 1),
        count=_number(headers, COUNT, 1),
        hub_id=hub_id,
        number=_number(headers, NUMBER, 0),
        frames=payload or b"",
    )


def next_seq(entry: Entry | None) -> int:
    """The global seq the frame after ``entry`` gets (1 after none: an empty stream)."""
    return 1 if entry is None else entry.last_seq + 1


def merge(batches: Sequence[Batch]) -> Batch:
    """Consecutive batches of one hub as one: one message, numbered as the last of them. A
    stored message numbered N says every batch of its hub up to N is in (a hub's batches are
    appended in order), so a resend regrouped differently is still recognised (jetstream.py)."""
    if not batches:
        raise ValueError("nothing to merge")
    last = batches[-1]
    if len(batches) == 1:
        return last
    numbers = [batch.number for batch in batches]
    if {batch.hub_id for batch in batches} != {last.hub_id} or numbers != sorted(set(numbers)):
        raise ValueError("only one hub's batches, in order, merge")
    return Batch(
        last.hub_id,
        last.number,
        sum(batch.count for batch in batches),
        b"".join(batch.frames for batch in batches),
    )
