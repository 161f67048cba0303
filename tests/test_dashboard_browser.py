"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a
real `stereo run --dashboard`: the table shows the live pids, a worker killed from outside shows
its restart within seconds, the restart button replaces a pid, a page without the token is
refused; with --pool, the pool section shows the pool processes and their jobs.

As in tests/test_webchat_browser.py, the browser runs with the sync API in one worker thread;
every step waits on a page condition with a Playwright timeout, and the thread closes the browser.
Set STEREO_DASHBOARD_SCREENSHOT=PATH to keep a picture of the page (docs/images/dashboard.png).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from conftest import open_stereo
from playwright.sync_api import Page, expect, sync_playwright
from test_webchat_browser import CHROMIUM, CHROMIUM_ARGS  # Debian's, never `playwright install`

from stereo.control.client import ControlClient

STEP_TIMEOUT_MS = 15_000
RESTART_WITHIN_MS = 10_000  # "within seconds": the page polls once a second
TOKEN = "browser-test-token"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"BROWSER TEST NOT RUN: {CHROMIUM} is missing (apt-get install chromium; .ci/run does)",
)


def live_pids(control: str) -> dict[int, int]:
    """{slot: pid} of the current processes, as the master says."""
    with ControlClient.connect(control) as client:
        rows = client.request("status")
    return {row["slot"]: row["pid"] for row in rows if row["current"]}


def ready_row(page: Page, slot: int):  # type: ignore[no-untyped-def]
    return page.locator(f'#workers tbody tr[data-slot="{slot}"][data-state="ready"]')


@contextmanager
def open_page() -> Iterator[Page]:
    """A page in Debian's headless Chromium, closed with its browser at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def drive(base: str, control: str) -> dict[str, object]:
    seen: dict[str, object] = {}
    with open_page() as page:
        # Without the token: refused, and nothing of the master shown.
        refused = page.goto(base)
        assert refused is not None and refused.status == 403
        expect(page.locator("body")).to_contain_text("requires its token")

        page.goto(f"{base}?token={TOKEN}")
        expect(page.locator("#status")).to_have_text("live")
        rows = page.locator('#workers tbody tr[data-state="ready"]')
        expect(rows).to_have_count(3)

        # The table shows the live pids.
        pids = live_pids(control)
        for slot, pid in pids.items():
            expect(ready_row(page, slot)).to_have_attribute("data-pid", str(pid))

        # A worker killed from outside: its new pid and one restart, within seconds.
        os.kill(pids[2], signal.SIGKILL)
        killed_at = time.monotonic()
        row = ready_row(page, 2)
        expect(row).not_to_have_attribute("data-pid", str(pids[2]), timeout=RESTART_WITHIN_MS)
        expect(row.locator("td").nth(4)).to_have_text("1")
        seen["restart_seen_after"] = time.monotonic() - killed_at
        new_pid = int(row.get_attribute("data-pid") or "0")
        assert new_pid == live_pids(control)[2]

        # The restart button, confirmed, replaces slot 1's process.
        questions: list[str] = []

        def accept(dialog):  # type: ignore[no-untyped-def]
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        ready_row(page, 1).locator("button.restart").click()
        expect(ready_row(page, 1)).not_to_have_attribute(
            "data-pid", str(pids[1]), timeout=STEP_TIMEOUT_MS * 2
        )
        assert questions == ["Restart worker 1?"]
        replaced = int(ready_row(page, 1).get_attribute("data-pid") or "0")
        assert replaced == live_pids(control)[1] != pids[1]
        expect(page.locator("#logs")).to_contain_text("restart 1 (from 127.0.0.1:")

        # A dismissed confirmation does nothing.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.locator("#add").click()
        expect(page.locator("#notice")).to_contain_text("restart: done")
        seen["workers_after_dismiss"] = len(live_pids(control))

        # The log panel: the master's own lines and the workers' output, from its ring.
        logs = page.locator("#logs")
        expect(page.locator("#logs-note")).to_be_hidden()
        expect(logs).to_contain_text(f"worker 2 (pid {pids[2]}) exited: killed by SIGKILL")
        expect(logs).to_contain_text(f"[worker 2] ready pid={new_pid}")

        # Some traffic for the charts: worker 1 floods (2,000 broadcasts).
        with ControlClient.connect(control) as client:
            client.request("broadcast", {"value": "flood"})
        expect(page.locator("#hub-totals")).to_contain_text("2,0")
        expect(page.locator("#chart-cpu polyline")).to_have_count(3)
        shot = os.environ.get("STEREO_DASHBOARD_SCREENSHOT")
        if shot:
            page.screenshot(path=shot, full_page=True)
        seen["screenshot"] = shot
    return seen


async def test_the_dashboard_in_a_browser(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    args = ("observed:serve", "-w", "3", "--control", control, "--no-console")
    dashboard = ("--dashboard", "127.0.0.1:0", "--dashboard-token", TOKEN)
    with trio.fail_after(110):
        async with open_stereo(*args, *dashboard) as stereo:
            match = await stereo.wait_for(r"^\[observe\] dashboard on (http://\S+/) ")
            await stereo.wait_for(r"^\[worker \d\] ready pid=", count=3)
            seen = await trio.to_thread.run_sync(drive, match[0][1], control)
            print(json.dumps(seen))
            assert seen["workers_after_dismiss"] == 3
            await stereo.wait_for(r"^\[observe\] control: restart 1 \(from 127\.0\.0\.1:\d+\)$")
            assert not [line for line in stereo.lines if "control: add" in line]


def drive_pools(base: str, control: str) -> dict[str, object]:
    """The pool section: shown with --pool, each pool's processes with their pids, jobs done
    (tests/apps/pooljobs.py's round trip: 43 in the default pool, 11 in pdf, one of which
    prints), and a killed pool process replaced without its pool's jobs done going back."""
    with ControlClient.connect(control) as client:
        rows = [row for row in client.request("status") if row["current"]]
    workers = [row["pid"] for row in rows if row["pool"] is None]
    pool_pids = {row["pool"]: row["pid"] for row in rows if row["pool"] is not None}
    seen: dict[str, object] = {}
    with open_page() as page:
        page.goto(base)
        expect(page.locator("#status")).to_have_text("live")
        # The workers' table lists the workers only.
        expect(page.locator("#workers tbody tr")).to_have_count(len(workers))
        expect(page.locator("#workers tbody tr").first).to_have_attribute(
            "data-pid", str(workers[0])
        )
        expect(page.locator("#pools")).to_be_visible()
        for name, pid in pool_pids.items():
            pool = page.locator(f'#pools .pool[data-pool="{name}"]')
            expect(pool.locator('tbody tr[data-state="ready"]')).to_have_attribute(
                "data-pid", str(pid)
            )
        default = page.locator('#pools .pool[data-pool="default"]')
        expect(default.locator(".done")).to_have_text("43")
        expect(page.locator('#pools .pool[data-pool="pdf"] .done')).to_have_text("11")
        expect(page.locator("#chart-jobs polyline")).to_have_count(2)

        os.kill(pool_pids["default"], signal.SIGKILL)
        row = default.locator('tbody tr[data-state="ready"]')
        expect(row).not_to_have_attribute(
            "data-pid", str(pool_pids["default"]), timeout=RESTART_WITHIN_MS
        )
        expect(row.locator("td").nth(4)).to_have_text("1")  # its restart
        expect(default.locator(".done")).to_have_text("43")
        seen["new_pid"] = int(row.get_attribute("data-pid") or "0")
    return seen


async def test_the_pool_section_in_a_browser(tmp_path: Path) -> None:
    control = str(tmp_path / "control.sock")
    env = {"POOL_SCENARIO": "roundtrip", "POOL_TMP": str(tmp_path)}
    args = ("pooljobs:serve", "-w", "1", "--pool", "1", "--pool", "pdf=1", "--timeout", "8")
    with trio.fail_after(110):
        async with open_stereo(
            *args, "--control", control, "--no-console", "--dashboard", "127.0.0.1:0", env=env
        ) as stereo:
            match = await stereo.wait_for(r"^\[observe\] dashboard on (http://\S+/)$")
            await stereo.wait_for(r"^\[worker \d+\] RESULT ")
            seen = await trio.to_thread.run_sync(drive_pools, match[0][1], control)
            assert seen["new_pid"] in live_pids(control).values()
