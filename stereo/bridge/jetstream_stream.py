"""The JetStream stream stereo appends to: the configuration it creates, and what makes one that
exists unusable (pure: nats-py's config type only, no connection)."""

from __future__ import annotations

from nats.js.api import DiscardPolicy, RePublish, RetentionPolicy, StorageType, StreamConfig

from ..errors import StereoError


def republish(subjects: str, stored: str) -> RePublish:
    """Every entry of ``subjects`` (``P.*``) republished once stored, on ``stored`` (``Q.*``),
    the same last token: the waiting readers' feed."""
    return RePublish(src=subjects, dest=stored.removesuffix("*") + "{{wildcard(1)}}")


def republishes(config: StreamConfig, subjects: str, stored: str) -> bool:
    """Whether the stream republishes its entries where readers wait for them (a stream made
    by an older stereo does not: its readers wait on the publishes themselves)."""
    return config.republish == republish(subjects, stored)


def stream_config(
    name: str, subjects: str, retention: int, duplicate_window: float, stored: str
) -> StreamConfig:
    """Limits retention that trims the oldest past ``retention`` entries, on disk (a restarted
    server keeps it), with direct gets (the reader's), a duplicate window, and every entry
    republished on ``stored`` once stored (what a waiting reader is handed)."""
    return StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_msgs=retention,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        allow_direct=True,
        republish=republish(subjects, stored),
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
