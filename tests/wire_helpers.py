"""Test-only views of the wire, kept out of the package: a reference decoder for relayed
broadcasts, written apart from the code under test so that it can check it, and one way to drive
every reader of frames, so that tests can hold them all to the same rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from stereo.errors import ProtocolError
from stereo.wire.framing import Frame, FrameReader
from stereo.wire.protocol import (
    BROADCAST_OVERHEAD,
    STAMP,
    BroadcastReader,
    HubIngress,
    Run,
    max_body_size,
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One broadcast as a worker receives it, payload still encoded."""

    seq: int
    sender: int
    payload: bytes


def split_broadcast(frame: Frame) -> Delivery:
    body = frame.body
    assert len(body) >= BROADCAST_OVERHEAD, f"BROADCAST frame of {len(body) + 1} bytes is too short"
    seq, sender = STAMP.unpack_from(body, 0)
    return Delivery(seq, sender, body[BROADCAST_OVERHEAD:])


def run_deliveries(run: Run, max_message_size: int) -> list[Delivery]:
    """The broadcasts of a run, as stamped by the relay."""
    reader = FrameReader(max_body_size(max_message_size))
    reader.receive_data(run.data)
    return [split_broadcast(frame) for frame in reader.frames()]


# -- every reader, driven the way its driver drives it -----------------------------------------

#: Takes one received chunk; returns the broadcast values it let out and the error it reported.
Take = Callable[[bytes], tuple[list[Any], ProtocolError | None]]


def _frame_reader(max_message_size: int) -> Take:
    # As the control server does: receive_data(), then frames(); either may raise.
    reader = FrameReader(max_body_size(max_message_size))

    def take(chunk: bytes) -> tuple[list[Any], ProtocolError | None]:
        reader.receive_data(chunk)
        return [cbor2.loads(split_broadcast(frame).payload) for frame in reader.frames()], None

    return take


def _hub_ingress(max_message_size: int) -> Take:
    # As the relay does: events() never raises; an error is the last event.
    ingress = HubIngress(sender=1, max_message_size=max_message_size)
    seq = 1

    def take(chunk: bytes) -> tuple[list[Any], ProtocolError | None]:
        nonlocal seq
        ingress.receive_data(chunk)
        events, seq = ingress.events(seq)
        values: list[Any] = []
        error = None
        for event in events:
            if isinstance(event, Run):
                values.extend(
                    cbor2.loads(d.payload) for d in run_deliveries(event, max_message_size)
                )
            else:
                assert isinstance(event, ProtocolError), f"a control frame: {event}"
                error = event
        return values, error

    return take


def _broadcast_reader(accelerate: bool) -> Callable[[int], Take]:
    # As the worker does: deliveries() raises.
    def make(max_message_size: int) -> Take:
        reader = BroadcastReader(max_message_size, accelerate=accelerate)

        def take(chunk: bytes) -> tuple[list[Any], ProtocolError | None]:
            reader.receive_data(chunk)
            return [message.data for message in reader.deliveries()], None

        return take

    return make


READERS: dict[str, Callable[[int], Take]] = {
    "FrameReader": _frame_reader,
    "HubIngress": _hub_ingress,
    "BroadcastReader/C": _broadcast_reader(True),
    "BroadcastReader/python": _broadcast_reader(False),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    values: list[Any]  # the broadcast values let out, in order
    error: tuple[type[ProtocolError], str] | None  # the first error reported
    fed: int | None  # bytes fed when it was reported


def read_broadcasts(reader: str, data: bytes, step: int, max_message_size: int) -> Outcome:
    """Feed ``data`` to one of :data:`READERS`, ``step`` bytes at a time, until it reports an
    error."""
    take = READERS[reader](max_message_size)
    values: list[Any] = []
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        try:
            got, error = take(chunk)
        except ProtocolError as exc:
            got, error = [], exc
        values.extend(got)
        if error is not None:
            return Outcome(values, (type(error), str(error)), start + len(chunk))
    return Outcome(values, None, None)
