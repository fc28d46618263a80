"""docs/screenshots/paced-plug.png: the live page at 1440x900 in the middle of a plug at a
teaching pace of 200 ms (a request held in flight, the explanation line saying why).

Run: .venv/bin/python scripts/screenshot_paced_plug.py [OUT.png]  (needs Chromium and
Playwright, as the browser tests do).
"""

from __future__ import annotations

import os
import sys
import time

from playwright.sync_api import sync_playwright

from webapp import live
from webapp.live import CHROMIUM_ARGS, LiveServer
from webapp.sessions import default_config

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots", "paced-plug.png")


def main(out: str = OUT) -> None:
    server = LiveServer({"VMEMLAB_DEFAULT_MACHINE": default_config})
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=live.CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1440, "height": 900},
                                       base_url=server.url).new_page()
            page.goto("/")
            page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
            card = '#device-cards article[data-device="vm0"]'
            page.wait_for_function(f"() => document.querySelector('{card}').dataset.plugged"
                                   " === String(256 * 1048576)", timeout=30_000)
            page.fill(f"{card} .req-number", "0")
            page.click(f"{card} .req-set")
            page.wait_for_function(f"() => document.querySelector('{card}').dataset.plugged"
                                   " === '0'", timeout=30_000)
            page.select_option("#pace", "200")
            page.wait_for_function("() => document.getElementById('pace-box').dataset.pace"
                                   " === '200'")
            page.fill(f"{card} .req-number", "512")
            page.click(f"{card} .req-set")
            # two of four requests answered, the third held in flight
            page.wait_for_function(f"() => +document.querySelector('{card}').dataset.plugged"
                                   " === 256 * 1048576 && !document.querySelector("
                                   f"'{card} .inflight').hidden", timeout=30_000)
            time.sleep(0.1)
            page.screenshot(path=out)
            browser.close()
    finally:
        server.close()
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:2])
