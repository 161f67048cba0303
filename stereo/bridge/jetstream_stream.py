"""The JetStream stream stereo appends to: the configuration it creates, and what makes one that
exists unusable (pure: nats-py's config type only, no connection)."""

from __future__ import annotations

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from ..errors import StereoError


def stream_config(
    name: str, subjects: str, retention: int, duplicate_window: float
) -> StreamConfig:
    """Limits retention that trims the oldest past ``retention`` entries, on disk (a restarted
    server keeps it), with direct gets (the reader's) and a duplicate window."""
    return StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_msgs=retention,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        allow_direct=True,
    )


class StreamMismatch(StereoError, ValueError):
    """The stream exists with a configuration stereo cannot share (other subjects, another
    retention): a configuration error, not something a retry fixes."""


def stream_config_problems(config: StreamConfig, subject: str, retention: int) -> list[str]:
    """What makes an existing stream unusable for ``subject`` with ``retention`` entries."""
    problems = []
    if config.subjects != [subject]:
        problems.append(f"subjects {config.subjects} instead of [{subject!r}]")
    if config.max_msgs != retention:
        problems.append(f"max_msgs {config.max_msgs} instead of {retention}")
    if config.retention not in (None, RetentionPolicy.LIMITS):
        problems.append(f"retention {config.retention} instead of limits")
    if config.discard not in (None, DiscardPolicy.OLD):
        # DiscardPolicy.NEW would refuse appends once full instead of trimming the oldest.
        problems.append(f"discard {config.discard} instead of old")
    if not config.duplicate_window:
        problems.append("no duplicate window (a resent batch would be appended twice)")
    return problems
