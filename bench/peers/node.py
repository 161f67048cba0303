"""Node.js ``cluster``: the primary relays each ``worker.send`` to every worker (JSON over IPC).

The script is bench/apps/node_cluster.js; the relaying process is the primary.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from ..apps._spec import Spec
from ..procs import Group
from .base import Peer

SCRIPT = Path(__file__).resolve().parent.parent / "apps" / "node_cluster.js"


class NodeCluster(Peer):
    name = "node-cluster"
    relay_name = "node primary"

    def missing(self) -> str | None:
        if shutil.which("node") is None:
            return "node is not on PATH"
        if not SCRIPT.is_file():
            return f"{SCRIPT} is missing"
        return None

    def start(self, group: Group, spec: Spec, env: Mapping[str, str]) -> int:
        node = shutil.which("node")
        assert node is not None
        return group.spawn([node, str(SCRIPT)], name="node primary", env=env).pid
