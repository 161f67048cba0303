"""The live view (``stereo top``, or ``top`` in the console): the worker table and hub rates,
redrawn every second, like circus-top or pm2 monit. ``q``, Esc or Ctrl-C leaves it.

Fetching happens in a thread (the control client is blocking), so a slow master delays the
next frame, never the keyboard.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl

from ..errors import ControlError
from .client import ControlClient, ControlUnreachable
from .render import format_bridge, format_status, human_bytes, human_duration, human_rate

REFRESH_INTERVAL = 1.0
FETCH_TIMEOUT = 5.0


def render_top(rows: list[dict[str, Any]], stats: dict[str, Any], now: float | None = None) -> str:
    """One frame of the live view (pure)."""
    rates = stats["rates"]
    clock = time.strftime("%H:%M:%S", time.localtime(stats["time"] if now is None else now))
    header = [
        f"stereo top  {clock}  master pid {stats['pid']}, up {human_duration(stats['uptime'])},"
        f" {stats['workers']} workers" + ("  STOPPING" if stats["stopping"] else ""),
        f"broadcasts {human_rate(rates['broadcasts_per_s'])}/s"
        f"  deliveries {human_rate(rates['deliveries_per_s'])}/s"
        f"  in {human_bytes(rates['bytes_in_per_s'])}/s"
        f"  out {human_bytes(rates['bytes_out_per_s'])}/s"
        f"  cut-offs {stats['cutoffs']}  respawns {stats['respawns']}"
        f"  master {human_bytes(stats['master_rss'])} {stats['master_cpu_percent']:.1f}%",
        *([format_bridge(stats["bridge"])] if stats.get("bridge") else []),
        "",
    ]
    return "\n".join(header) + "\n" + format_status(rows)


def fetch_frame(client: ControlClient) -> str:
    rows = client.request("status", timeout=FETCH_TIMEOUT)
    stats = client.request("stats", timeout=FETCH_TIMEOUT)
    return render_top(rows, stats)


def run_top(client: ControlClient, interval: float = REFRESH_INTERVAL) -> str | None:
    """Show the live view until the user leaves it; returns an error if the master went away."""
    return asyncio.run(run_top_async(client, interval))


async def run_top_async(client: ControlClient, interval: float = REFRESH_INTERVAL) -> str | None:
    """:func:`run_top` in a running asyncio loop (the console's own)."""
    state: dict[str, Any] = {"text": "connecting...", "error": None}
    bindings = KeyBindings()

    @bindings.add("q")
    @bindings.add("escape")
    @bindings.add("c-c")
    @bindings.add("c-d")
    def _leave(event: KeyPressEvent) -> None:
        event.app.exit()

    def text() -> str:
        return str(state["text"]) + "\n\n(q to leave)"

    app: Application[None] = Application(
        layout=Layout(Window(FormattedTextControl(text), wrap_lines=False)),
        key_bindings=bindings,
        full_screen=True,
    )

    async def refresh() -> None:
        while True:
            try:
                state["text"] = await asyncio.to_thread(fetch_frame, client)
            except ControlUnreachable as exc:
                state["error"] = str(exc)
                app.exit()
                return
            except ControlError as exc:
                state["text"] = f"error: {exc}"
            app.invalidate()
            await asyncio.sleep(interval)

    def start() -> None:
        app.create_background_task(refresh())

    await app.run_async(pre_run=start, handle_sigint=False)
    error: str | None = state["error"]
    return error
