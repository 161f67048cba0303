"""examples/webchat in a real browser: Debian's headless Chromium, driven by Playwright, chats
through two different workers of the real ``stereo run``.

Playwright's Python API runs its own asyncio loop, and these tests run under trio, so the browser
is driven with the sync API in one worker thread (``trio.to_thread.run_sync``). Every browser step
waits on a page condition with a Playwright timeout, so the thread always returns; it closes the
browser itself, so no Chromium outlives the test.
"""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import trio
from conftest import open_stereo
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_examples import EXAMPLES, all_ready, example_args


def _load_screenshot_script() -> ModuleType:
    path = EXAMPLES / "webchat" / "screenshot.py"
    spec = importlib.util.spec_from_file_location("webchat_screenshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHROMIUM = Path("/usr/bin/chromium")
# Never `playwright install` (its download fails here): Debian's chromium, from .ci/run.
# The flags are the screenshot script's, so the picture in the docs and the test see one browser.
CHROMIUM_ARGS = _load_screenshot_script().CHROMIUM_ARGS
WEBCHAT = EXAMPLES / "webchat"
# Pages opened, at most, to find two on different workers (the kernel picks the worker).
MAX_PAGES = 16
STEP_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"BROWSER TEST NOT RUN: {CHROMIUM} is missing (apt-get install chromium; .ci/run does)",
)


def open_chat(browser: Browser, url: str) -> tuple[Page, int, int]:
    """A chat page in a fresh context (so a fresh connection), once its WebSocket is welcomed;
    with the worker id and pid the page shows."""
    page = browser.new_context().new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(url)
    worker = page.locator("#worker[data-worker]")
    worker.wait_for()
    worker_id = int(worker.get_attribute("data-worker") or "")
    pid = int(worker.get_attribute("data-pid") or "")
    expect(worker).to_contain_text(f"worker {worker_id} (pid {pid})")
    return page, worker_id, pid


def chat_across_two_workers(url: str, text: str) -> dict[int, int]:
    """Open pages until two are on different workers, send ``text`` from one, and check both
    pages list it under the sender's name. Returns {worker id: pid} of the two pages."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            pages: dict[int, tuple[Page, int]] = {}
            for _ in range(MAX_PAGES):
                page, worker_id, pid = open_chat(browser, url)
                if worker_id in pages:
                    page.context.close()
                    continue
                pages[worker_id] = (page, pid)
                if len(pages) == 2:
                    break
            assert len(pages) == 2, f"{MAX_PAGES} pages all reached worker(s) {sorted(pages)}"

            (sender, _), (receiver, _) = pages.values()
            name = sender.locator("#worker").get_attribute("data-name")
            assert name, "the welcome named no sender"
            sender.fill("#line", text)
            sender.get_by_role("button", name="Send").click()
            for page in (receiver, sender):
                line = page.locator("#messages li", has_text=text)
                expect(line).to_have_count(1)
                expect(line.locator(".who")).to_have_text(name)
            expect(sender.locator("#line")).to_have_value("")
            return {worker_id: pid for worker_id, (_, pid) in pages.items()}
        finally:
            browser.close()


async def test_a_line_typed_in_one_page_appears_in_a_page_on_another_worker() -> None:
    with trio.fail_after(90):
        async with open_stereo(*example_args("app:app", app_dir=WEBCHAT), cwd=WEBCHAT) as stereo:
            host, port = await stereo.address()
            await all_ready(stereo, "webchat")
            text = "hello from one worker's page to another's"
            pids = await trio.to_thread.run_sync(
                chat_across_two_workers, f"http://{host}:{port}/", text
            )
            # The pages name two different worker processes of this master.
            assert len(set(pids.values())) == 2, pids
            assert set(pids.values()) <= {child.pid for child in stereo.children()}
            assert not [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()]

            stereo.signal(signal.SIGTERM)
            assert await stereo.wait() == 0
