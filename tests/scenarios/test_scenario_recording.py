"""Recordings: keyframes agree with the events replayed since the previous keyframe."""

from __future__ import annotations

import io
import json

import pytest

from scenarios import Player, Recorder, Recording, parse_scenario
from scenarios.recording import RecordingError, apply_event

STORY = """
title: keyframes
machine: >-
  -m 256M,maxmem=2G -object memory-backend-ram,id=mem0,size=1G
  -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=128M
steps:
  - wait-until: {settled: true}
  - set-requested-size: {device: vm0, size: 768M}
  - wait-until: {device: vm0, plugged: 768M, settled: true}
  - guest: alloc
    size: 8M
    unmovable: true
    target: vm0
  - set-requested-size: {device: vm0, size: 64M}
  - wait-until: {device: vm0, settled: true}
  - reboot: {}
  - wait-until: {device: vm0, plugged: 64M, settled: true}
  - migrate: {}
  - set-requested-size: {device: vm0, size: 256M}
  - wait-until: {device: vm0, plugged: 256M, settled: true}
"""


@pytest.fixture(scope="module")
def recording() -> Recording:
    stream = io.StringIO()
    assert Player(parse_scenario(STORY), recorder=Recorder(stream, keyframe_events=25)).run()
    return Recording.parse(io.StringIO(stream.getvalue()))


def test_every_keyframe_equals_the_replay_from_the_one_before(recording: Recording) -> None:
    state = None
    checked = 0
    for entry in recording.entries:
        if entry.get("machine") != "main":
            continue
        if entry["type"] == "keyframe":
            if state is not None:
                for dev_id, dev in entry["state"]["devices"].items():
                    got = state["devices"][dev_id]
                    for key in ("bitmap", "plugged_size", "requested_size",
                                "usable_region_size", "driver_state"):
                        assert got[key] == dev[key], (key, entry["t"])
                assert state["runstate"] == entry["state"]["runstate"]
                checked += 1
            state = json.loads(json.dumps(entry["state"]))
        elif entry["type"] == "event" and state is not None:
            apply_event(state, entry["event"])
        elif entry["type"] == "marker" and entry["marker"] == "detach":
            state = None  # migrated: the destination starts with its own keyframe
    assert checked >= 5


def test_times_never_go_backwards_and_migration_is_marked(recording: Recording) -> None:
    times = [e["t"] for e in recording.entries]
    assert times == sorted(times)
    kinds = [e.get("marker") for e in recording.entries if e["type"] == "marker"]
    assert kinds == ["attach", "detach", "attach", "detach"]


def test_seek_is_consistent_over_the_whole_timeline(recording: Recording) -> None:
    steps = {s["index"]: s for s in recording.steps()}
    assert recording.state_at(steps[3]["t"])["main"]["devices"]["vm0"]["plugged_size"] \
        == 768 << 20
    after_reboot = recording.state_at(steps[8]["t"])["main"]
    assert after_reboot["devices"]["vm0"]["plugged_size"] == 64 << 20
    assert recording.state_at(recording.duration)["main"]["devices"]["vm0"][
        "plugged_size"] == 256 << 20


def test_reader_rejects_what_it_does_not_know() -> None:
    with pytest.raises(RecordingError, match="not a vmemlab-recording"):
        Recording.parse(io.StringIO('{"format": "other"}\n'))
    with pytest.raises(RecordingError, match="version 9"):
        Recording.parse(io.StringIO('{"format": "vmemlab-recording", "version": 9}\n'))
    with pytest.raises(RecordingError, match="line 2: not JSON"):
        Recording.parse(io.StringIO('{"format": "vmemlab-recording", "version": 1}\n{\n'))
