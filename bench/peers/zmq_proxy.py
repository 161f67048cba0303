"""ZeroMQ: ``zmq.proxy`` (XSUB/XPUB) in its own process, W worker processes, ipc:// transport.

ipc:// (unix domain sockets) rather than tcp:// over loopback, since stereo's hub is local too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..apps._spec import ID_ENV, Spec
from ..procs import Group, suite_env
from .base import PYTHON, Peer

STARTUP_TIMEOUT = 30.0


class ZmqProxy(Peer):
    name = "zmq-proxy"
    relay_name = "zmq.proxy process"

    def missing(self) -> str | None:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return "pyzmq is not installed (pip install -e '.[bench]')"
        return None

    def endpoints(self, spec: Spec, work_dir: str) -> dict[str, str]:
        return {
            "xsub": f"ipc://{os.path.join(work_dir, 'xsub')}",
            "xpub": f"ipc://{os.path.join(work_dir, 'xpub')}",
        }

    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        e = spec.endpoints
        proxy = group.spawn(
            [PYTHON, "-m", "bench.apps.zmq_proxy", e["xsub"], e["xpub"]],
            name="proxy",
            env=suite_env(env),
        )
        group.wait("ready", 1, STARTUP_TIMEOUT)
        for i in range(1, spec.workers + 1):
            group.spawn(
                [PYTHON, "-m", "bench.apps.zmq_worker"],
                name=f"worker {i}",
                env=suite_env({**env, ID_ENV: str(i)}),
            )
        return proxy.pid
