"""Takes docs/images/dashboard.png: `stereo run --dashboard` with four workers broadcasting at
changing rates (tests/apps/ticker.py) for a minute, one of them killed from outside halfway,
seen in headless Chromium. Run from the checkout: `.venv/bin/python tests/dashboard_screenshot.py`.
Not a test (it sleeps to let the charts fill); the dashboard's tests are test_dashboard*.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from test_webchat_browser import CHROMIUM, CHROMIUM_ARGS

from stereo.control.client import ControlClient

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images" / "dashboard.png"
SECONDS = 70


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        control = f"{work}/control.sock"
        argv = [sys.executable, "-m", "stereo", "run", "ticker:serve", "-w", "4"]
        argv += ["--app-dir", str(ROOT / "tests" / "apps"), "--control", control]
        argv += ["--no-console", "--dashboard", "127.0.0.1:0"]
        master = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=work)
        try:
            assert master.stdout is not None
            url = None
            while url is None:
                line = master.stdout.readline()
                if not line:
                    raise SystemExit("stereo run ended before its dashboard listened")
                found = re.search(r"dashboard on (http://\S+/)", line)
                url = found[1] if found else None
            # Keep reading its output, so that the master never waits on a full pipe.
            threading.Thread(target=master.stdout.read, daemon=True).start()
            time.sleep(SECONDS / 2)
            with ControlClient.connect(control) as client:
                rows = client.request("status")
            os.kill(next(r["pid"] for r in rows if r["slot"] == 3), signal.SIGKILL)
            time.sleep(SECONDS / 2)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(url)
                page.locator("#status", has_text="live").wait_for()
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(60)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
