"""Redis pub/sub on the local server (``STEREO_BENCH_REDIS_URL``, default redis://127.0.0.1:6379).

Redis disconnects a subscriber whose output buffer passes 32 MB, which big payloads reach while a
Python subscriber catches up; that would make the peer lossy instead of slow, so the session lifts
the pubsub limit for its duration and restores the server's setting afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping

from ..apps._spec import ID_ENV, Spec
from ..procs import Group, suite_env
from .base import PYTHON, Peer

URL_ENV = "STEREO_BENCH_REDIS_URL"
LIMIT = "client-output-buffer-limit"


def redis_url() -> str:
    return os.environ.get(URL_ENV, "redis://127.0.0.1:6379")


class RedisPubSub(Peer):
    name = "redis-pubsub"
    relay_name = "redis-server"

    def missing(self) -> str | None:
        try:
            import redis
        except ImportError:
            return "redis-py is not installed (pip install -e '.[bench]')"
        try:
            redis.Redis.from_url(redis_url(), socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            return f"no Redis server at {redis_url()} ({exc}); set {URL_ENV}"
        return None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        import redis

        client = redis.Redis.from_url(redis_url(), decode_responses=True)
        old = str(client.config_get(LIMIT)[LIMIT])
        pubsub_old = " ".join(_class_limits(old, "pubsub"))
        client.config_set(LIMIT, "pubsub 0 0 0")
        try:
            yield
        finally:
            client.config_set(LIMIT, f"pubsub {pubsub_old}")
            client.close()

    def endpoints(self, spec: Spec, work_dir: str) -> dict[str, str]:
        return {"url": redis_url(), "channel": f"stereo-bench-{uuid.uuid4().hex}"}

    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        import redis

        for i in range(1, spec.workers + 1):
            group.spawn(
                [PYTHON, "-m", "bench.apps.redis_worker"],
                name=f"worker {i}",
                env=suite_env({**env, ID_ENV: str(i)}),
            )
        info = redis.Redis.from_url(redis_url()).info("server")
        return int(info["process_id"])


def _class_limits(setting: str, cls: str) -> list[str]:
    """The three numbers of one client class in a client-output-buffer-limit value."""
    words = setting.split()
    i = words.index(cls)
    return words[i + 1 : i + 4]
