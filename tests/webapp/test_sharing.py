"""Live recordings (export) and share-by-link, against real machines (no mocks)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from emulator import Machine
from emulator.config import MiB
from scenarios.loader import load_scenario
from scenarios.recording import Recording
from tests.webapp.conftest import with_csrf
from webapp import ext
from webapp.pages import TOKEN

GUARANTEE = "scenarios/bundled/04-who-guarantees-what.yaml"
LESSON = "scenarios/bundled/lessons/04-who-guarantees-what.yaml"  # the same story with goals


@pytest.fixture
def share_dir(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "shared"
    monkeypatch.setitem(app.config, "VMEMLAB_SHARE_DIR", str(folder))
    return folder


def _token(client: FlaskClient) -> str:
    with client.session_transaction() as s:
        return str(s[TOKEN])


def _machine(app: Flask, client: FlaskClient) -> Machine:
    """The running machine of the client's session."""
    session = ext.sessions(app).get(_token(client))
    assert session is not None and session.machine is not None
    return session.machine


def _wait_plugged(client: FlaskClient, dev: str, size: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get("/api/machine/status").get_json()
        d = next(x for x in info["devices"] if x["id"] == dev)
        if d["plugged_size"] == size and d["driver_state"] == "idle":
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.02)


def _recording(client: FlaskClient) -> tuple[Recording, str]:
    res = client.get("/api/machine/recording")
    assert res.status_code == 200, res.get_data(as_text=True)
    assert res.mimetype == "application/x-ndjson"
    assert res.headers["Content-Disposition"].startswith("attachment;")
    text = res.get_data(as_text=True)
    return Recording.parse(io.StringIO(text)), text


def test_export_replays_to_the_current_state(app: Flask, http: FlaskClient) -> None:
    ok = http.post("/api/machine/requested-size", json={"device": "vm0", "size": "160M"})
    assert ok.status_code == 200, ok.get_json()
    _wait_plugged(http, "vm0", 160 * MiB)
    rec, _ = _recording(http)
    assert rec.header["title"] == "Live session" and rec.header["scenario"] is None
    assert rec.header["machines"]["main"]["config"]["boot_ram"] == 64 * MiB
    keyframes = [e for e in rec.entries if e["type"] == "keyframe"]
    assert len(keyframes) >= 2  # at attach and the forced one at export
    machine = _machine(app, http)
    snap = machine.snapshot()
    last = keyframes[-1]["state"]
    for d in snap.devices:
        assert last["devices"][d.id]["bitmap"] == d.bitmap.hex()
        assert last["devices"][d.id]["plugged_size"] == d.plugged_size
    vm0 = last["devices"]["vm0"]
    assert bytes.fromhex(vm0["bitmap"]).count(1) * vm0["block_size"] == 160 * MiB
    # the events replayed from the first keyframe agree with the last one
    assert any(e["type"] == "event" and e["event"]["kind"] == "block_state"
               for e in rec.entries)
    replayed = rec.state_at(rec.duration)["main"]
    assert replayed["devices"]["vm0"]["bitmap"] == vm0["bitmap"]


def test_new_machine_restarts_the_recording(http: FlaskClient) -> None:
    _, before = _recording(http)
    assert http.post("/api/machine", json={"preset": "default"}).status_code == 200
    rec, _ = _recording(http)
    assert rec.header["created"] > json.loads(before.splitlines()[0])["created"]
    assert [e["marker"] for e in rec.entries if e["type"] == "marker"][:1] == ["attach"]


def test_cap_truncates_with_a_marker(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ext.sessions(app).settings, "max_recording_bytes", 6000)
    client = app.test_client()
    client.get("/")
    with_csrf(client)
    assert client.get("/api/machine/status").status_code == 200
    _wait_plugged(client, "vm0", 64 * MiB)  # booting and plugging writes far more than 6000
    res = client.get("/api/machine/recording")
    body = res.get_data()
    assert len(body) <= 6000
    rec = Recording.parse(io.StringIO(body.decode()))
    assert rec.entries[-1]["type"] == "marker" and rec.entries[-1]["marker"] == "truncated"
    # nothing more is appended afterwards
    assert client.post("/api/machine/requested-size",
                       json={"device": "vm0", "size": "96M"}).status_code == 200
    _wait_plugged(client, "vm0", 96 * MiB)
    assert client.get("/api/machine/recording").get_data() == body


def _share_file(client: FlaskClient, data: bytes, name: str) -> Any:
    return client.post("/share", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_share_a_recording(http: FlaskClient, share_dir: Path) -> None:
    _, text = _recording(http)
    res = _share_file(http, text.encode(), "mine.ndjson")
    assert res.status_code == 200, res.get_json()
    share_id, url = res.get_json()["id"], res.get_json()["url"]
    assert url == f"/s/{share_id}" and len(share_id) == 8
    page = http.get(url)
    assert page.status_code == 302
    location = urlsplit(page.headers["Location"])
    assert location.path == "/replay"
    assert parse_qs(location.query)["src"] == [f"/shared/{share_id}.ndjson"]
    served = http.get(f"/shared/{share_id}.ndjson")
    assert served.status_code == 200 and served.get_data(as_text=True) == text
    assert (share_dir / f"{share_id}.ndjson").read_text() == text


def test_share_the_live_recording(http: FlaskClient, share_dir: Path) -> None:
    res = http.post("/share", json={"session_recording": True})
    assert res.status_code == 200, res.get_json()
    share_id = res.get_json()["id"]
    rec = Recording.parse(io.StringIO(http.get(f"/shared/{share_id}.ndjson")
                                      .get_data(as_text=True)))
    assert rec.header["title"] == "Live session"
    assert any(e["type"] == "keyframe" for e in rec.entries)


@pytest.mark.parametrize("path", [GUARANTEE, LESSON])
def test_share_a_scenario_and_start_it(app: Flask, http: FlaskClient, share_dir: Path,
                                       path: str) -> None:
    scenario = load_scenario(path)
    assert bool(scenario.goals) == (path == LESSON)
    with open(path, "rb") as f:
        res = _share_file(http, f.read(), "04-who-guarantees-what.yaml")
    assert res.status_code == 200, res.get_json()
    share_id = res.get_json()["id"]
    page = http.get(f"/s/{share_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert scenario.title in html and f"/s/{share_id}/start" in html
    started = http.post(f"/s/{share_id}/start")
    assert started.status_code == 302
    cfg = scenario.machines[scenario.default_machine].config
    machine = _machine(app, http)
    assert machine.config.boot_ram == cfg.boot_ram
    assert [(d.id, d.size) for d in machine.config.devices] == \
        [(d.id, d.size) for d in cfg.devices]
    target = started.headers["Location"]
    if scenario.goals:
        assert target.endswith(f"/s/{share_id}/lesson?fresh=1")
        lesson = http.get(target).get_data(as_text=True)
        assert f"/s/{share_id}/goals" in lesson
        goals = http.get(f"/s/{share_id}/goals").get_json()["goals"]
        assert len(goals) == len(scenario.goals)
    else:
        assert target.endswith("/")


def test_invalid_yaml_gives_400_with_a_line(http: FlaskClient, share_dir: Path) -> None:
    bad = b"title: broken\nmachine: -m 256M\nsteps:\n  - say: [unclosed\n"
    res = _share_file(http, bad, "broken.yaml")
    assert res.status_code == 400
    error = res.get_json()["error"]
    assert error.startswith("broken.yaml:") and error.split(":")[1].isdigit(), error
    res = _share_file(http, b'{"format": "nope"}\n', "x.ndjson")
    assert res.status_code == 400 and "line 1" in res.get_json()["error"]
    assert not share_dir.exists() or not any(share_dir.iterdir())


@pytest.mark.parametrize("path", [
    "/s/..%2F..%2Fetc%2Fpasswd", "/s/../x", "/s/abc", "/s/abcdefgh", "/s/abc.defg",
    "/shared/..%2Fx.ndjson", "/shared/abcdefgh.ndjson", "/shared/abc.ndjson",
    "/s/%2E%2E%2F%2E%2E%2F", "/s/abcdefgh/start",
])
def test_bad_ids_are_404(http: FlaskClient, share_dir: Path, path: str) -> None:
    res = http.post(path) if path.endswith("/start") else http.get(path)
    assert res.status_code == 404


def test_a_shared_session_carries_the_sharers_title_and_note(
        app: Flask, http: FlaskClient, share_dir: Path) -> None:
    """Issue 12 §6: not "Live session" with no narration, but the sharer's words, bounded."""
    http.get("/")
    _machine(app, http)
    res = http.post("/share", json={"session_recording": True, "title": "Why\x1b[2J 16M stay",
                                     "note": "Watch vm0.\nThen reboot."})
    assert res.status_code == 200, res.get_json()
    share_id = res.get_json()["id"]
    text = http.get(f"/shared/{share_id}.ndjson").get_data(as_text=True)
    rec = Recording.parse(io.StringIO(text))
    assert rec.header["title"] == "Why [2J 16M stay"  # control characters are gone
    assert rec.header["summary"] == "Watch vm0. Then reboot."
    says = [e for e in rec.entries if e["type"] == "say"]
    assert says[0]["text"] == "Watch vm0. Then reboot." and says[0]["t"] == 0
    for body, words in (({"title": "x" * 121}, "at most 120"), ({"title": 5}, "must be text"),
                        ({"note": "y" * 1001}, "at most 1000")):
        bad = http.post("/share", json={"session_recording": True, **body})
        assert bad.status_code == 400 and words in bad.get_json()["error"]
    page = http.get("/share").get_data(as_text=True)
    assert 'id="share-file-input"' in page and 'maxlength="120"' in page


PACED_LESSON = b"""\
title: "Lesson: a paced plug"
machine:
  boot-ram: 128M
  devices: [{id: vm0, size: 256M, requested-size: 0}]
  pace: 150
  pause-after-reset: true
goals:
  - goal: "Ask for 64M"
    when: {device: vm0, plugged: 64M}
steps:
  - say: "Nothing is plugged yet."
"""


def test_a_lesson_started_in_the_page_gets_its_teaching_pace(
        app: Flask, http: FlaskClient, share_dir: Path) -> None:
    """The machine fields ``pace`` and ``pause-after-reset`` apply from the start, in the page
    as in ``vmemlab play`` (a lesson written for a slow plug must not run at full speed)."""
    from control import control_for
    res = _share_file(http, PACED_LESSON, "paced.yaml")
    assert res.status_code == 200, res.get_json()
    started = http.post(f"/s/{res.get_json()['id']}/start")
    assert started.status_code == 302
    pace = control_for(_machine(app, http)).pace()
    assert pace.pace_ms == 150 and pace.pause_after_reset
