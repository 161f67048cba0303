"""Regenerate docs/images/webchat.png: two chat pages on two different workers, side by side.

    python examples/webchat/screenshot.py [OUT.png] [--chromium /usr/bin/chromium]

Starts ``stereo run app:app -w 4`` on a free port, opens pages in headless Chromium (through
Playwright, with the system's browser) until two are on different workers, exchanges a line each
way, and photographs both pages in one image.
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import threading
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

HERE = Path(__file__).parent
DEFAULT_OUT = HERE.parent.parent / "docs" / "images" / "webchat.png"
WORKERS = 4
BOOT_TIMEOUT = 30.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 560, "height": 540}
GAP = 12  # pixels between the two pages


def start_stereo() -> tuple[subprocess.Popen[str], str]:
    """``stereo run`` on a free port; its URL once every worker is ready."""
    command = [sys.executable, "-m", "stereo", "run", "app:app", "-w", str(WORKERS)]
    process = subprocess.Popen(
        [*command, "--bind", "127.0.0.1:0", "--app-dir", str(HERE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    watchdog = threading.Timer(BOOT_TIMEOUT, process.kill)  # a hung boot ends the read below
    watchdog.start()
    url, ready = None, 0
    try:
        for line in process.stdout:
            if match := re.match(r"^\[stereo\] listening on (\S+:\d+)$", line):
                url = f"http://{match[1]}/"
            ready += bool(re.match(r"^\[worker \d+\] webchat: worker \d+ ready$", line))
            if url and ready == WORKERS:
                return process, url
    finally:
        watchdog.cancel()
    raise SystemExit(f"stereo exited (or hung) before it was ready: {process.wait()}")


def open_chat(browser: Browser, url: str) -> tuple[Page, str]:
    page = browser.new_context(viewport=VIEWPORT).new_page()  # a new context: a new connection
    page.goto(url)
    worker = page.locator("#worker[data-worker]")
    worker.wait_for(timeout=10_000)
    return page, worker.get_attribute("data-worker") or ""


def two_pages_on_two_workers(browser: Browser, url: str) -> tuple[Page, Page]:
    pages: dict[str, Page] = {}
    for _ in range(16):
        page, worker = open_chat(browser, url)
        if worker in pages:
            page.context.close()
        else:
            pages[worker] = page
        if len(pages) == 2:
            first, second = pages.values()
            return first, second
    raise SystemExit("every page reached the same worker")


def say(sender: Page, text: str, *everyone: Page) -> None:
    sender.fill("#line", text)
    sender.get_by_role("button", name="Send").click()
    for page in everyone:
        expect(page.locator("#messages li", has_text=text)).to_have_count(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    process, url = start_stereo()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                left, right = two_pages_on_two_workers(browser, url)
                say(left, "hello from this worker", left, right)
                say(right, "and hello back from another one", left, right)
                shots = [base64.b64encode(page.screenshot()).decode() for page in (left, right)]
                # Composed by the browser itself: no imaging library needed.
                board = browser.new_page(
                    viewport={"width": 2 * VIEWPORT["width"] + GAP, "height": VIEWPORT["height"]}
                )
                images = "".join(f'<img src="data:image/png;base64,{s}">' for s in shots)
                board.set_content(
                    f'<body style="margin:0;background:#888;display:flex;gap:{GAP}px;'
                    f'width:max-content">{images}</body>'
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                board.screenshot(path=str(args.out), full_page=True)
            finally:
                browser.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
