"""Broker URLs shown in logs and stats never carry the password."""

from __future__ import annotations

import pytest

from stereo.urls import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("redis://app:s3cret@[::1]:6379/2", "redis://app:***@[::1]:6379/2"),
        ("nats://user:pw@nats.internal:4222", "nats://user:***@nats.internal:4222"),
        ("nats://t0ken@nats.internal:4222", "nats://***@nats.internal:4222"),
        ("redis://app@redis.internal:6379/0", "redis://app@redis.internal:6379/0"),
        ("redis://:pw@host:notaport/0", "redis://:***@host:notaport/0"),
        ("redis://u:pw@[::1/0", "redis://***"),
    ],
)
def test_redact_hides_the_password_and_nothing_else(url: str, shown: str) -> None:
    assert redact(url) == shown
