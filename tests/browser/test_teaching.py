"""Issue 12 §2/§5/§6/§7 in a real browser: the first-visit tour, a lesson's hint levels,
prediction and debrief against the real machine, replay step back, sharing a file from the
page, the monitor's history and completion, the favicon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scenarios.loader import lessons, load_scenario, resolve_path
from scenarios.recording import Recorder
from scenarios.runner import Player

LESSON = "05-make-it-stop-short"


def frame_monitor(page: Any, line: str) -> None:
    """Type a monitor line in the lesson's sandbox frame and wait for its answer."""
    frame = page.frame_locator("iframe")
    before = frame.locator("#hmp-out").inner_text()
    frame.locator("#hmp-in").fill(line)
    frame.locator("#hmp-in").press("Enter")
    page.wait_for_function(
        "([n]) => { const f = document.querySelector('iframe').contentDocument;"
        " return f.getElementById('hmp-out').textContent.length >= n; }",
        arg=[len(before) + len(line) + 8], timeout=20_000)
    page.wait_for_timeout(500)  # the answer comes over the socket after the echo


def test_tour_first_visit_dismiss_and_reopen(new_page: Any) -> None:
    page = new_page(tour=True)
    page.wait_for_selector("#tour:not([hidden])", timeout=10_000)
    assert page.inner_text("#tour-title") == "What is virtio-mem?"
    page.click(".tour-next")
    assert page.inner_text("#tour-title") == "What is a cell?"
    # the swatches are the grid's colours, from the one block-state table
    fills = page.evaluate("""() => {
        const t = JSON.parse(document.getElementById('vmem-block-states').textContent);
        const want = Object.fromEntries(t.states.map((s) => [s.key, s.style.fill]));
        const sw = [...document.querySelectorAll('#tour .swatch-inline')];
        const probe = document.createElement('span'); document.body.appendChild(probe);
        const norm = (c) => {
            probe.style.background = c; return getComputedStyle(probe).backgroundColor; };
        return [norm(want.PLUGGED_UNMOVABLE), sw.map((s) => getComputedStyle(s).backgroundColor)];
    }""")
    assert fills[0] in fills[1]
    page.click(".tour-next")
    assert "requested" in page.inner_text("#tour") and "usable" in page.inner_text("#tour")
    page.click(".tour-back")
    assert page.inner_text("#tour-title") == "What is a cell?"
    page.click(".tour-close")
    assert page.is_hidden("#tour")
    page.reload()
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
    page.wait_for_timeout(300)
    assert page.is_hidden("#tour")  # seen: not again
    page.click("#tour-open")
    page.wait_for_selector("#tour:not([hidden])")
    assert page.inner_text("#tour-title") == "What is virtio-mem?"
    links = page.eval_on_selector_all("#tour a", "as => as.map((a) => a.href)")
    assert links == []  # the first card has none; the last one does
    for _ in range(4):
        page.click(".tour-next")
    links = page.eval_on_selector_all("#tour a", "as => as.map((a) => a.href)")
    assert any("oasis-open.org/virtio" in h for h in links)
    assert any("msg151523" in h for h in links)  # the RFC
    page.keyboard.press("Escape")
    assert page.is_hidden("#tour")
    assert page.errors == []


def test_lesson_hints_prediction_and_debrief(new_page: Any) -> None:
    page = new_page()
    page.goto("/lessons")
    item = page.locator(f"#lessons li[data-key='lesson:{LESSON}']")
    assert item.locator(".progress").inner_text() == "not started"
    item.locator("button").click()
    assert item.locator(".replace-warning").is_visible()  # warned first, nothing replaced
    assert page.url.endswith("/lessons")
    item.locator("button").click()
    page.wait_for_url(f"**/lessons/{LESSON}")
    goal = page.locator("#goals li[data-index='1']")
    # hints: nudge, then pointer, then the answer -- one level per press
    assert goal.locator(".hint:visible").count() == 0
    goal.locator(".more-hint").click()
    assert goal.locator(".hint:visible").count() == 1
    assert "ZONE_MOVABLE" in goal.locator(".hint:visible").inner_text()
    goal.locator(".more-hint").click()
    assert goal.locator(".hint:visible").count() == 2
    assert goal.locator(".more-hint").inner_text() == "show the answer"
    goal.locator(".more-hint").click()
    assert "guest pin 16M vm0" in goal.locator(".hint[data-level='3']").inner_text()
    assert goal.locator(".more-hint").is_disabled()
    # a size needs its unit; then the prediction is locked in
    goal.locator("form.predict input").fill("16")
    goal.locator("form.predict button").click()
    assert "unit" in goal.locator(".predict-result").inner_text()
    goal.locator("form.predict input").fill("16M")
    goal.locator("form.predict button").click()
    assert goal.locator("form.predict input").is_disabled()
    assert goal.locator(".debrief").is_hidden()
    page.frame_locator("iframe").locator("#hmp-in").wait_for(timeout=20_000)
    frame_monitor(page, "qom-set vm0 requested-size 512M")
    page.wait_for_selector("#goals li[data-index='0'].done", timeout=60_000)
    frame_monitor(page, "guest pin 16M vm0")
    frame_monitor(page, "qom-set vm0 requested-size 0")
    page.wait_for_selector("#goals li[data-index='1'].done", timeout=60_000)
    result = goal.locator(".predict-result")
    assert result.get_attribute("data-verdict") == "right", result.inner_text()
    assert "the machine measured 16 MiB" in result.inner_text()
    assert goal.locator(".debrief").is_visible()
    assert "8 device blocks" in goal.locator(".debrief").inner_text()
    assert page.locator("#next-lesson").is_visible()
    # progress in the list, kept by this browser
    page.goto("/lessons")
    assert page.locator(f"#lessons li[data-key='lesson:{LESSON}'] .progress").inner_text() \
        == "2/3 goals"
    assert page.errors == []


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    scenario = load_scenario(resolve_path("rfc-walkthrough"))
    path = tmp_path / "rfc.ndjson"
    with open(path, "w", encoding="utf-8") as stream:
        assert Player(scenario, recorder=Recorder(stream)).run()
    return path


def test_replay_steps_forward_and_back(new_page: Any, recording: Path) -> None:
    page = new_page()
    page.goto("/replay")
    page.set_input_files("#rec-file", str(recording))
    page.wait_for_function("() => document.getElementById('replay').dataset.loaded === '1'")
    ticks = int(page.inner_text("#rec-tick").split("/")[1])
    entries = [json.loads(line) for line in recording.read_text().splitlines()[1:]]
    steps = sum(e["type"] == "step" for e in entries)
    answers = sum(e["type"] == "event" and e["event"]["kind"] == "response" for e in entries)
    assert ticks == steps + answers  # one tick per scenario step and answered request
    assert page.is_disabled("#rec-back")
    seen = []
    for _ in range(6):
        page.click("#rec-step")
        seen.append((page.inner_text("#rec-tick"), page.inner_text("#rec-machines"),
                     page.inner_text("#rec-say"), page.inner_text("#rec-log")))
    for i in (4, 3, 2):
        page.click("#rec-back")
        now = (page.inner_text("#rec-tick"), page.inner_text("#rec-machines"),
               page.inner_text("#rec-say"), page.inner_text("#rec-log"))
        assert now == seen[i]  # back is exactly where forward was
    page.focus("#replay")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#rec-tick") == seen[3][0]
    # the live page's legend and colours: the RFC walkthrough pins memory in reg0
    assert "plugged, movable data" in page.inner_text("#rec-legend")
    page.fill("#rec-timeline", "1000")
    pinned = page.evaluate("""() => {
        const t = JSON.parse(document.getElementById('vmem-block-states').textContent);
        return t.states.find((s) => s.key === 'PLUGGED_UNMOVABLE').label; }""")
    assert pinned in page.inner_text("#rec-legend")
    assert page.errors == []


def test_share_a_file_from_the_page(new_page: Any, live_server: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(live_server.app.config, "VMEMLAB_SHARE_DIR", str(tmp_path))
    page = new_page()
    page.goto("/share")
    page.set_input_files("#share-file-input", lessons()[1])
    page.click("#share-file button[type=submit]")
    link = page.locator("#share-file-out a.share-link")
    link.wait_for(timeout=10_000)
    assert "/s/" in link.get_attribute("href")
    # a broken file: the loader's FILE:LINE: message, as text
    bad = tmp_path.parent / "broken.yaml"
    bad.write_text("title: t\nmachine: -m 1G\nsteps:\n  - sya: hi\n")
    page.set_input_files("#share-file-input", str(bad))
    page.click("#share-file button[type=submit]")
    page.wait_for_selector("#share-file-out .error")
    assert "broken.yaml:4" in page.inner_text("#share-file-out")
    # this session's recording, with the sharer's title and note
    page.fill("#share-title", "My <b>first</b> plug")
    page.fill("#share-note", "Watch vm0 grow.")
    page.click("#share-session button[type=submit]")
    session_link = page.locator("#share-session-out a.share-link")
    session_link.wait_for(timeout=10_000)
    session_link.click()
    page.wait_for_function("() => document.getElementById('replay').dataset.loaded === '1'",
                           timeout=10_000)
    assert page.inner_text("#rec-title") == "My <b>first</b> plug"  # text, never markup
    assert page.inner_text("#rec-say") == "Watch vm0 grow."
    assert page.errors == []


def test_monitor_history_and_completion(new_page: Any) -> None:
    page = new_page()
    for line in ("info memory-devices", "info status"):
        page.fill("#hmp-in", line)
        page.press("#hmp-in", "Enter")
    page.press("#hmp-in", "ArrowUp")
    assert page.input_value("#hmp-in") == "info status"
    page.press("#hmp-in", "ArrowUp")
    assert page.input_value("#hmp-in") == "info memory-devices"
    page.press("#hmp-in", "ArrowDown")
    assert page.input_value("#hmp-in") == "info status"
    page.press("#hmp-in", "ArrowDown")
    assert page.input_value("#hmp-in") == ""
    page.fill("#hmp-in", "qom-s")
    page.press("#hmp-in", "Tab")
    page.wait_for_function("() => document.getElementById('hmp-in').value === 'qom-set '")
    page.fill("#hmp-in", "info memory-d")
    page.press("#hmp-in", "Tab")
    page.wait_for_function(
        "() => document.getElementById('hmp-in').value === 'info memory-devices '")
    assert page.errors == []


def test_every_page_has_a_favicon(new_page: Any) -> None:
    page = new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    for path in ("/lessons", "/replay", "/share"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    answer = page.request.get("/favicon.ico")
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg")
    assert missing == []


HOSTILE = '<img src=x onerror="window.__xss=(window.__xss||0)+1">'


def test_a_shared_lessons_teaching_text_is_only_text(new_page: Any, live_server: Any,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Hints, question and debrief of an uploaded lesson render as text, never as markup."""
    monkeypatch.setitem(live_server.app.config, "VMEMLAB_SHARE_DIR", str(tmp_path))
    lesson = tmp_path.parent / "hostile-lesson.yaml"
    quoted = json.dumps(HOSTILE)
    lesson.write_text(
        f"title: {quoted}\n"
        "machine: -m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=512M"
        " -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=64M\n"
        "steps:\n  - say: hi\n"
        "goals:\n"
        f"  - goal: {quoted}\n"
        f"    hints: [{quoted}, {quoted}, {quoted}]\n"
        f"    predict: {{question: {quoted}, measure: plugged}}\n"
        f"    debrief: {quoted}\n"
        "    when: {device: vm0, plugged: '>= 0'}\n")
    page = new_page()
    page.goto("/share")
    page.set_input_files("#share-file-input", str(lesson))
    page.click("#share-file button[type=submit]")
    link = page.locator("#share-file-out a.share-link")
    link.wait_for(timeout=10_000)
    link.click()
    page.click("#start")
    page.click("#start")  # warned once, then it replaces the machine
    page.wait_for_url("**/lesson")
    goal = page.locator("#goals li[data-index='0']")
    for _ in range(3):
        goal.locator(".more-hint").click()
    page.wait_for_selector("#goals li[data-index='0'].done", timeout=30_000)
    assert goal.locator(".debrief").inner_text() == "Why: " + HOSTILE
    assert HOSTILE in goal.locator(".hint[data-level='3']").inner_text()
    assert HOSTILE in goal.locator(".predict-q").inner_text()
    assert page.locator("#goals img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.errors == []


def test_replay_loads_this_sessions_own_recording(new_page: Any, chromium: Any,
                                                  live_server: Any) -> None:
    """The sandbox's "replay" link leads to a player that can load what this session has
    recorded so far; a visitor without a sandbox is told why nothing loads."""
    page = new_page()
    page.wait_for_function(  # the guest plugged its boot-time request: PLUGs to replay
        "() => Number(document.querySelector('.device[data-device=\"vm0\"]')"
        ".dataset.plugged) > 0", timeout=20_000)
    page.goto("/replay")
    page.click("#rec-mine")
    page.wait_for_function("() => document.getElementById('replay').dataset.loaded === '1'",
                           timeout=10_000)
    assert page.inner_text("#rec-error") == ""
    assert int(page.inner_text("#rec-tick").split("/")[1]) > 0
    page.fill("#rec-timeline", "1000")
    assert "vm0" in page.inner_text("#rec-machines")
    assert "PLUG" in page.inner_text("#rec-log")

    stranger = chromium.new_context(base_url=live_server.url)
    try:
        other = stranger.new_page()
        other.goto("/replay")
        other.click("#rec-mine")
        other.wait_for_function(
            "() => document.getElementById('rec-error').textContent.length > 0")
        assert other.inner_text("#rec-error") == (
            "this session's recording: this session has no recording")
        assert other.evaluate("document.getElementById('replay').dataset.loaded") is None
    finally:
        stranger.close()
