"""A replay draws plugged blocks in the live page's colours (issue 12 §6): keyframes keep what
the guest held per block (``held``), events clear it where blocks are unplugged or the machine
resets, and the browser's reader (static/recording.js) agrees with the Python one."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scenarios import parse_scenario
from scenarios.recording import Recorder, Recording, RecordingError
from scenarios.runner import Player

ROOT = Path(__file__).resolve().parents[2]
STORY = """
title: pinned and movable
machine: >-
  -m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=512M
  -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=256M
  -append memhp_default_state=online
steps:
  - wait-until: {settled: true}
  - guest: alloc
    size: 16M
    unmovable: true
    target: vm0
  - guest: alloc
    size: 32M
    target: vm0
  - set-requested-size: {device: vm0, size: 0}
  - wait-until: {device: vm0, driver: stopped-short}
  - reboot: {by: host}
  - wait-until: {settled: true}
"""


@pytest.fixture(scope="module")
def recording() -> Recording:
    stream = io.StringIO()
    assert Player(parse_scenario(STORY), recorder=Recorder(stream)).run()
    return Recording.parse(io.StringIO(stream.getvalue()))


def _held(rec: Recording, t: float) -> str:
    return str(rec.state_at(t)["main"]["devices"]["vm0"].get("held", ""))


def test_keyframes_keep_pinned_and_movable_blocks(recording: Recording) -> None:
    steps = recording.steps()
    entries = recording.entries
    # the keyframe forced right after the second alloc step
    at = entries.index(steps[2])
    after_allocs = next(e["t"] for e in entries[at:] if e["type"] == "keyframe")
    held = bytes.fromhex(_held(recording, after_allocs))
    assert held.count(2) == 8  # 16M pinned in 2 MiB blocks
    assert held.count(1) >= 16  # 32M of movable data
    stopped = bytes.fromhex(_held(recording, steps[4]["t"]))
    bitmap = bytes.fromhex(recording.state_at(steps[4]["t"])["main"]["devices"]["vm0"]["bitmap"])
    assert stopped.count(2) == 8 and all(bitmap[i] for i, h in enumerate(stopped) if h)
    # after the reset nothing is held until the guest runs again
    assert not any(bytes.fromhex(_held(recording, recording.duration)))


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_reader_agrees(recording: Recording, tmp_path: Path) -> None:
    rec_path = tmp_path / "rec.ndjson"
    lines = [json.dumps(recording.header)] + [json.dumps(e) for e in recording.entries]
    rec_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(ROOT / "static" / "recording.js", tmp_path / "recording.mjs")
    times = [e["t"] for e in recording.entries[::5]] + [recording.duration]
    script = tmp_path / "check.mjs"
    script.write_text(
        "import { readFileSync } from 'node:fs';\n"
        "import { parseRecording, stateAt } from './recording.mjs';\n"
        f"const rec = parseRecording(readFileSync({json.dumps(str(rec_path))}, 'utf8'));\n"
        f"const times = {json.dumps(times)};\n"
        "console.log(JSON.stringify(times.map((t) => { const d = stateAt(rec, t).main;\n"
        "  return d && d.devices.vm0.held ? Buffer.from(d.devices.vm0.held).toString('hex')"
        " : ''; })));\n", encoding="utf-8")
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    js: list[Any] = json.loads(done.stdout)
    py = [_held(recording, t) if "main" in recording.state_at(t) else "" for t in times]
    assert js == py


def test_a_held_map_of_the_wrong_length_is_refused(recording: Recording) -> None:
    frame = next(e for e in recording.entries if e["type"] == "keyframe")
    bad = json.loads(json.dumps(frame))
    bad["state"]["devices"]["vm0"]["held"] = "00"
    text = json.dumps(recording.header) + "\n" + json.dumps(bad) + "\n"
    with pytest.raises(RecordingError, match="held"):
        Recording.parse(io.StringIO(text))
