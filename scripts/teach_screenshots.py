"""Take issue 12's teaching screenshots (docs/screenshots/): the first-visit tour on the live
page, a lesson with a checked prediction and its debrief, the replay in step mode.

Run: ``python scripts/teach_screenshots.py`` (playwright and /usr/bin/chromium, like the
browser tests). Real machines at 1440x900: the numbers in the pictures are measured.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from playwright.sync_api import sync_playwright

from scenarios.loader import load_scenario, resolve_path
from scenarios.recording import Recorder
from scenarios.runner import Player
from webapp.live import CHROMIUM, CHROMIUM_ARGS, LiveServer

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "screenshots")
SIZE = {"width": 1440, "height": 900}


def monitor(page, line: str) -> None:  # type: ignore[no-untyped-def]
    frame = page.frame_locator("iframe")
    frame.locator("#hmp-in").fill(line)
    frame.locator("#hmp-in").press("Enter")
    page.wait_for_timeout(800)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    with LiveServer() as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # 1. the first visit: the tour over the live page
        page = browser.new_context(viewport=SIZE, base_url=server.url).new_page()
        page.goto("/")
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
        page.wait_for_selector("#tour:not([hidden])")
        page.click(".tour-next")
        page.wait_for_timeout(800)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=os.path.join(OUT, "first-visit.png"))

        # 2. a lesson: the prediction locked in, the goal reached, its debrief
        page.click(".tour-close")
        page.goto("/lessons")
        item = page.locator("#lessons li[data-key='lesson:05-make-it-stop-short']")
        item.locator("button").click()
        item.locator("button").click()
        page.wait_for_url("**/lessons/05-make-it-stop-short")
        goal = page.locator("#goals li[data-index='1']")
        for _ in range(2):
            goal.locator(".more-hint").click()
        goal.locator("form.predict input").fill("0")
        goal.locator("form.predict button").click()
        page.frame_locator("iframe").locator("#hmp-in").wait_for(timeout=30_000)
        monitor(page, "qom-set vm0 requested-size 512M")
        page.wait_for_selector("#goals li[data-index='0'].done", timeout=60_000)
        monitor(page, "guest pin 16M vm0")
        monitor(page, "qom-set vm0 requested-size 0")
        page.wait_for_selector("#goals li[data-index='1'].done", timeout=60_000)
        monitor(page, "info virtio-mem vm0")
        page.wait_for_timeout(1000)
        page.evaluate("""() => {
            document.querySelector('#goals li[data-index="1"]').scrollIntoView({block: 'start'});
            window.scrollTo(0, 0);
        }""")
        page.screenshot(path=os.path.join(OUT, "lesson-debrief.png"))

        # 3. the replay in step mode: the RFC walkthrough, pinned memory in reg0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rfc-walkthrough.ndjson")
            with open(path, "w", encoding="utf-8") as stream:
                Player(load_scenario(resolve_path("rfc-walkthrough")),
                       recorder=Recorder(stream)).run()
            replay = browser.new_context(viewport=SIZE, base_url=server.url).new_page()
            replay.goto("/replay")
            replay.set_input_files("#rec-file", path)
            replay.wait_for_function(
                "() => document.getElementById('replay').dataset.loaded === '1'")
            # step to where the guest pins memory it cannot give back, then a little on
            for _ in range(600):
                if "cannot give back" in replay.inner_text("#rec-say"):
                    break
                replay.click("#rec-step")
            for _ in range(12):
                replay.click("#rec-step")
            replay.click("#rec-back")
            replay.wait_for_timeout(500)
            replay.screenshot(path=os.path.join(OUT, "replay-step.png"))
        browser.close()
    for name in ("first-visit.png", "lesson-debrief.png", "replay-step.png"):
        print(os.path.join(OUT, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
