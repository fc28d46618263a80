"""Take the README's screenshots (docs/screenshots/*.png) of the sandbox in headless Chromium.

Run: ``python scripts/screenshots.py`` (needs playwright and /usr/bin/chromium, like the
browser tests). It drives a real machine: the numbers in the pictures are real.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from playwright.sync_api import sync_playwright

from webapp.live import CHROMIUM, CHROMIUM_ARGS, LiveServer

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "screenshots")


def plugged(page, dev: str, blocks: int) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        f"() => document.querySelector('canvas.grid[data-device=\"{dev}\"]')?.dataset.plugged"
        f" === '{blocks}'", timeout=30_000)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    with LiveServer() as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")  # no tour
        page.goto(server.url)
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
        plugged(page, "vm0", 128)
        send = "async ([e, d]) => (await import('/static/transport.js')).send(e, d)"
        page.evaluate(send, ["set_requested_size", {"device": "vm0", "size": 640 << 20}])
        plugged(page, "vm0", 320)
        page.evaluate(send, ["guest", {"action": "alloc", "size": 192, "target": "vm0"}])
        page.evaluate(send, ["guest", {"action": "alloc", "size": 48, "unmovable": True,
                                       "target": "vm0"}])
        page.evaluate(send, ["guest", {"action": "alloc", "size": 96, "target": "vm1"}])
        page.evaluate(send, ["set_requested_size", {"device": "vm0", "size": 256 << 20}])
        page.wait_for_timeout(1500)
        page.fill("#hmp-in", "info memory-devices")
        page.press("#hmp-in", "Enter")
        page.evaluate(send, ["guest", {"action": "rogue_write", "device": "vm1"}])
        page.wait_for_timeout(1200)
        page.screenshot(path=os.path.join(OUT, "overview.png"), full_page=True)
        page.check('input[name="view"][value="host"]')
        page.wait_for_timeout(600)
        page.locator("#devices").screenshot(path=os.path.join(OUT, "host-view.png"))
        page.check('input[name="view"][value="guest"]')
        page.click("#btn-reboot")
        page.wait_for_timeout(300)
        page.locator("#devices").screenshot(path=os.path.join(OUT, "after-reboot.png"))
        narrow = browser.new_page(viewport={"width": 760, "height": 1100})
        narrow.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")  # no tour
        narrow.goto(server.url)
        narrow.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
        narrow.wait_for_timeout(1000)
        narrow.screenshot(path=os.path.join(OUT, "narrow.png"))
        browser.close()
    print("screenshots in", OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
