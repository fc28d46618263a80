"""The browser player: its page, its JS seek logic (against the Python reader) and a real
Chromium replaying a recording with no emulator behind it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scenarios import Player, Recorder, Recording, parse_scenario
from tests.webapp.conftest import with_csrf

ROOT = Path(__file__).resolve().parents[2]
STORY = """
title: replay me
machine: >-
  -m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=512M
  -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=64M,x-rfc-write-protect=on
steps:
  - wait-until: {settled: true}
  - say: Grow to 256M.
  - set-requested-size: {device: vm0, size: 256M}
  - wait-until: {device: vm0, plugged: 256M, settled: true}
  - guest: rogue-write
    device: vm0
    offset: 400M
    expect: {blocked: true}
  - say: Shrink to 128M.
  - set-requested-size: {device: vm0, size: 128M}
  - wait-until: {device: vm0, plugged: 128M, settled: true}
"""


@pytest.fixture(scope="module")
def recording_text() -> str:
    stream = io.StringIO()
    assert Player(parse_scenario(STORY), recorder=Recorder(stream, keyframe_events=15)).run()
    return stream.getvalue()


def test_replay_page_is_served() -> None:
    from webapp import create_app

    client = create_app({"TESTING": True}).test_client()
    page = client.get("/replay?src=/shared/AbCd_-12.ndjson").get_data(as_text=True)
    assert 'type="module"' in page and "replay.js" in page
    assert 'data-src="/shared/AbCd_-12.ndjson"' in page
    assert 'data-src=""' in client.get("/replay").get_data(as_text=True)
    # only this server's shared recordings load by link (tests/security has the attacks)
    assert client.get("/replay?src=/static/x.ndjson").status_code == 400
    assert client.get("/replay?src=//evil.example/x").status_code == 400
    assert client.get("/static/replay.js").status_code == 200


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_seek_matches_the_python_reader(recording_text: str, tmp_path: Path) -> None:
    rec_path = tmp_path / "rec.ndjson"
    rec_path.write_text(recording_text, encoding="utf-8")
    shutil.copy(ROOT / "static" / "recording.js", tmp_path / "recording.mjs")
    rec = Recording.load(str(rec_path))
    times = [0.0, *(e["t"] for e in rec.entries[::7]), rec.duration]
    script = tmp_path / "check.mjs"
    script.write_text(
        "import { readFileSync } from 'node:fs';\n"
        "import { parseRecording, stateAt, markers } from './recording.mjs';\n"
        f"const rec = parseRecording(readFileSync({json.dumps(str(rec_path))}, 'utf8'));\n"
        f"const times = {json.dumps(times)};\n"
        "const out = times.map((t) => Object.fromEntries(Object.entries(stateAt(rec, t)).map(\n"
        "  ([m, s]) => [m, Object.fromEntries(Object.entries(s.devices).map(([d, v]) =>\n"
        "    [d, [v.plugged_size, v.driver_state, Buffer.from(v.bits).toString('hex')]]))])));\n"
        "console.log(JSON.stringify({states: out, markers: markers(rec).length}));\n",
        encoding="utf-8")
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["markers"] == len(rec.markers()) == 3  # two says, one violation
    for t, js in zip(times, result["states"], strict=True):
        py = {m: {d: [v["plugged_size"], v["driver_state"], v["bitmap"]]
                  for d, v in s["devices"].items()} for m, s in rec.state_at(t).items()}
        assert js == py, t


def test_chromium_replays_a_recording(recording_text: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from webapp.live import CHROMIUM, CHROMIUM_ARGS, LiveServer

    chromium = os.environ.get("VMEMLAB_CHROMIUM", CHROMIUM)
    if not os.path.exists(chromium):
        pytest.skip(f"no Chromium at {chromium}")
    rec_path = tmp_path / "rec.ndjson"
    rec_path.write_text(recording_text, encoding="utf-8")
    rec = Recording.load(str(rec_path))
    with LiveServer({"TESTING": True}) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=server.url)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto("/replay")
            page.set_input_files("#rec-file", str(rec_path))
            page.wait_for_function("() => document.getElementById('replay').dataset.loaded === '1'")
            assert page.inner_text("#rec-title") == "replay me"
            assert page.locator(".rec-mark.say").count() == 2
            assert page.locator(".rec-mark.violation").count() == 1
            canvas = page.locator("canvas[data-dev='vm0']")
            # seek to the end with the timeline: 128M plugged = 64 blocks of 2M
            page.fill("#rec-timeline", "1000")
            page.dispatch_event("#rec-timeline", "input")
            assert canvas.get_attribute("data-plugged") == "64"
            assert "driver idle" in page.inner_text(".rec-dev-label[data-dev='vm0']")
            # a narration marker seeks to it: 64M plugged before the grow
            page.locator(".rec-mark.say").first.click()
            assert canvas.get_attribute("data-plugged") == "32"
            assert page.inner_text("#rec-say") == "Grow to 256M."
            # step jumps to the end of the next step; play runs to the end
            page.click("#rec-step")
            assert float(page.get_attribute("#replay", "data-t") or 0) > 0
            page.select_option("#rec-speed", "8")
            page.click("#rec-play")
            page.wait_for_function(
                f"() => Number(document.getElementById('replay').dataset.t) >= {rec.duration}",
                timeout=20_000)
            assert canvas.get_attribute("data-plugged") == "64"
            assert page.inner_text("#rec-play") == "play"
            assert not errors, errors
        finally:
            browser.close()


def test_lesson_goals_are_checked_live_against_the_sessions_machine() -> None:
    from monitor import run_hmp
    from webapp import create_app, ext
    from webapp.pages import TOKEN

    app = create_app({"TESTING": True})
    client = with_csrf(app.test_client())
    try:
        listing = client.get("/lessons").get_data(as_text=True)
        assert "Lesson: make the unplug stop short" in listing
        assert client.get("/lessons/nope").status_code == 404
        reply = client.post("/lessons/05-make-it-stop-short/start")
        assert reply.status_code == 302
        assert reply.location.endswith("/lessons/05-make-it-stop-short?fresh=1")
        page = client.get("/lessons/05-make-it-stop-short").get_data(as_text=True)
        assert "Grow vm0 to at least 512M" in page and "<iframe" in page
        with client.session_transaction() as cookie:
            token = cookie[TOKEN]
        sess = ext.sessions(app).get(token)
        assert sess is not None and sess.machine is not None
        machine = sess.machine
        assert machine.config.devices[0].size == 1 << 30  # the lesson's machine

        def goals() -> list[bool]:
            data = client.get("/lessons/05-make-it-stop-short/goals").get_json()
            return [g["reached"] for g in data["goals"]]

        assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "idle", 10)
        assert goals() == [False, False, False]
        assert run_hmp(machine, "qom-set vm0 requested-size 512M") == ""
        assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 512 << 20, 10)
        assert goals() == [True, False, False]
        assert "unmovable" in run_hmp(machine, "guest pin 16M vm0")
        assert run_hmp(machine, "qom-set vm0 requested-size 0") == ""
        assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "stopped-short", 10)
        assert "went through" in run_hmp(machine, "guest rogue-write 0 vm0")
        assert goals() == [False, True, True]  # the page latches the first one
    finally:
        ext.sessions(app).close_sessions()
