"""The exporter's and the dashboard's HTTP handlers, and the dashboard's once-a-second poll.

The exporter asks the master for a fresh snapshot on every scrape (so a scrape shows what the
master knows at that moment); the dashboard polls once a second for every open page at once
and pushes each tick to the pages as a server-sent event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import trio

from ..errors import ControlError
from .access import Access, ActionError, parse_action, same_origin
from .history import History
from .http import Request, Response, Stream
from .jobs import JobTotals
from .link import MasterLink
from .logs import MasterLogs
from .metrics import exposition
from .model import health, pool_sections, processes, worker_rows
from .processes import ProcessMeter

POLL_INTERVAL = 1.0
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode() + b"\n", "application/json")


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class Exporter:
    """GET /metrics and GET /healthz."""

    def __init__(self, link: MasterLink) -> None:
        self.link = link
        self.meter = ProcessMeter()
        self.jobs = JobTotals()
        self._lock = trio.Lock()  # JobTotals reads snapshots in order: one scrape at a time

    async def handle(self, request: Request) -> Response:
        if request.method != "GET" or request.path not in ("/metrics", "/healthz"):
            return Response(404, b"not found: try /metrics or /healthz\n")
        async with self._lock:
            try:
                snapshot = await self.link.request("snapshot")
            except ControlError as exc:
                if request.path == "/healthz":
                    return _json(503, {"status": "unreachable", "error": str(exc)})
                return Response(503, f"cannot read the master: {exc}\n".encode())
            if request.path == "/healthz":
                healthy, state = health(snapshot)
                return _json(200 if healthy else 503, state)
            jobs_done = self.jobs.update(snapshot)
        figures = self.meter.figures(proc["pid"] for _, proc in processes(snapshot))
        accept = request.headers.get("accept", "")
        body, content_type = exposition(snapshot, figures, accept, jobs_done)
        return Response(200, body, content_type)


class Dashboard:
    """The page, its live feed (GET /events) and its controls (POST /api/action)."""

    def __init__(
        self, link: MasterLink, actions: MasterLink, access: Access, out: Callable[[str], None]
    ) -> None:
        self.link = link
        self.actions = actions  # its own connection: a rolling restart takes a while
        self.access = access
        self.out = out
        self.meter = ProcessMeter()
        self.history = History()
        self.jobs = JobTotals()
        self.logs = MasterLogs(link)
        self.state: dict[str, Any] = {}
        self._tick = trio.Event()
        self._polled = trio.Event()  # the first reading is in: pages start from it

    async def poll(self) -> None:
        """Read the master once a second, forever; every page gets each reading."""
        while True:
            await self.refresh()
            await trio.sleep(POLL_INTERVAL)

    async def refresh(self) -> None:
        try:
            snapshot = await self.link.request("snapshot")
            figures = self.meter.figures(proc["pid"] for _, proc in processes(snapshot))
            lines = await self.logs.fetch()
        except ControlError as exc:
            if self.state.get("error") != str(exc):  # said once, not every second
                self.out(f"cannot read the master: {exc} (trying again every second)")
            self.state = {"error": str(exc), "logs": [], "point": None}
        else:
            if self.state.get("error"):
                self.out("reading the master again")
            jobs_done = self.jobs.update(snapshot)
            point = self.history.add(snapshot, figures, time.time(), jobs_done)
            hub = snapshot["hub"]
            self.state = {
                "error": None,
                "master": {
                    "pid": snapshot["pid"],
                    "uptime": snapshot["now"] - snapshot["started_at"],
                },
                "workers": worker_rows(snapshot, figures),
                "pools": pool_sections(snapshot, figures, jobs_done),
                "hub": {k: v for k, v in hub.items() if k not in ("size_buckets", "bridge")},
                "bridge": hub["bridge"],
                "point": point,
                "logs": lines,
                "logs_available": self.logs.available,
                "controls": True,
            }
        self._polled.set()
        tick, self._tick = self._tick, trio.Event()
        tick.set()

    async def _events(self) -> AsyncIterator[bytes]:
        await self._polled.wait()
        first = {**self.state, "history": list(self.history.points), "logs": list(self.logs.recent)}
        yield b"data: " + json.dumps(first).encode() + b"\n\n"
        while True:
            await self._tick.wait()
            yield b"data: " + json.dumps(self.state).encode() + b"\n\n"

    async def handle(self, request: Request) -> Response | Stream:
        name = request.path.removeprefix("/static/")
        if request.method == "GET" and name in STATIC:  # code, no data: loaded without the token
            return Response(200, _static(name), STATIC[name])
        if not self.access.allows(request.query, request.headers):
            self.out(f"refused {request.method} {request.path} from {request.peer}: no valid token")
            return Response(403, b"forbidden: this dashboard requires its token (?token=...)\n")
        if request.method == "GET":
            if request.path == "/":
                return Response(200, _static("index.html"), "text/html; charset=utf-8")
            if request.path == "/events":
                return Stream(self._events())
            return Response(404, b"not found\n")
        if request.method == "POST" and request.path == "/api/action":
            return await self._act(request)
        return Response(405, b"method not allowed\n")

    async def _act(self, request: Request) -> Response:
        if not same_origin(request.headers):
            return _json(403, {"error": "a control request must come from the dashboard's page"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _json(415, {"error": "a control request is JSON"})
        try:
            command, args, what = parse_action(request.body)
        except ActionError as exc:
            return _json(400, {"error": str(exc)})
        line = f"{what} (from {request.peer})"
        self.out(f"control: {line}")
        self.logs.note(line)
        try:
            result = await self.actions.request(command, args)
        except ControlError as exc:
            self.out(f"control: {what} refused: {exc}")
            return _json(409, {"error": str(exc)})
        return _json(200, {"ok": True, "result": result})
