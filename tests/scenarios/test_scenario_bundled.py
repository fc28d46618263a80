"""Every bundled scenario plays headless to the end on the real machine and guest.

Each is also recorded, and the recording must load and agree with the last state.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scenarios import Player, Recorder, Recording, load_scenario
from scenarios.loader import bundled, lessons

BUNDLED = bundled()
LESSONS = lessons()


def test_the_stories_are_bundled() -> None:
    names = [os.path.basename(p).split("-", 1)[1].rsplit(".", 1)[0] for p in BUNDLED]
    assert names == ["rfc-walkthrough", "reboot-shipped-vs-rfc", "unmodified-guest",
                     "who-guarantees-what", "crash-dump", "why-unplug-stops-short", "migration",
                     "block-size-and-numa",
                     # the RFC's Q&A, one file per question, named after it
                     "qa-whats-the-problem-with-ordinary-memory-hot-un-plug",
                     "qa-how-does-this-compare-to-xen-balloon",
                     "qa-how-does-this-compare-to-hyper-v-balloon",
                     "qa-why-not-reuse-acpi-hotplug",
                     "qa-why-do-we-need-resizable-memory-regions",
                     "qa-what-are-the-limitations-with-paravirtualized-memory-hotplug",
                     # issue 11: one per claim of the 2017 RFC about virtio-balloon
                     "balloon-cannot-add-memory", "balloon-deflate-on-oom",
                     "balloon-fixed-page-size", "balloon-no-guarantee",
                     "balloon-not-numa-aware", "balloon-reboot", "balloon-works-on-all-memory",
                     # issue 14: the experimental extensions, one per section built
                     "ext-autoscale", "ext-guest-requests", "ext-hugetlb",
                     "ext-memory-types", "ext-suspend"]


@pytest.mark.parametrize("path", BUNDLED + LESSONS,
                         ids=[os.path.basename(p) for p in BUNDLED + LESSONS])
def test_bundled_scenario_plays(path: str, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    record = tmp_path / "run.ndjson"
    with open(record, "w", encoding="utf-8") as stream:
        player = Player(scenario, recorder=Recorder(stream, keyframe_events=200))
        ok = player.run()
    failed = [r for r in player.reports if not r.ok]
    assert ok, f"step {failed[0].index} ({failed[0].kind}, line {failed[0].line}): " \
               f"{failed[0].summary}"
    assert len(player.reports) == len(scenario.steps) + len(scenario.goals)
    if scenario.goals:  # a lesson: its worked solution reaches every goal
        assert [r.kind for r in player.reports[-len(scenario.goals):]] == \
            ["goal"] * len(scenario.goals)
    rec = Recording.load(str(record))
    assert rec.title == scenario.title
    assert rec.entries[-1] == {**rec.entries[-1], "type": "end", "ok": True}
    assert [s["index"] for s in rec.steps()] == [r.index for r in player.reports]
    says = [e["text"] for e in rec.entries if e["type"] == "say"]
    assert says == [s.params["text"] for s in scenario.steps if s.kind == "say"]
    # seeking to the end agrees with the final keyframe of every machine
    final = {e["machine"]: e["state"] for e in rec.entries if e["type"] == "keyframe"}
    state = rec.state_at(rec.duration)
    for name, frame in final.items():
        for dev_id, dev in frame["devices"].items():
            got = state[name]["devices"][dev_id]
            assert (got["plugged_size"], got["bitmap"]) == (dev["plugged_size"], dev["bitmap"])


def test_rfc_walkthrough_ends_in_the_rfcs_numbers(tmp_path: Path) -> None:
    """The recording alone (no emulator) tells the RFC's story: 4G → 2G → 8G → 164M."""
    record = tmp_path / "rfc.ndjson"
    with open(record, "w", encoding="utf-8") as stream:
        assert Player(load_scenario("rfc-walkthrough"), recorder=Recorder(stream)).run()
    rec = Recording.load(str(record))
    assert rec.header["machines"]["main"]["config"]["maxmem"] == 20 << 30
    sizes = []
    for step in rec.steps():
        if step["kind"] == "wait-until":
            sizes.append(rec.state_at(step["t"])["main"]["devices"]["reg0"]["plugged_size"])
    assert sizes == [4 << 30, 2 << 30, 8 << 30, 171966464]
    end = rec.state_at(rec.duration)["main"]
    assert end["devices"]["reg0"]["driver_state"] == "stopped-short"
    assert bytes.fromhex(end["devices"]["reg0"]["bitmap"]).count(1) == 82
    assert end["nodes"][0]["plugged"] == 171966464


def test_the_first_four_stories_come_with_a_lesson() -> None:
    """Issue 5: at least the first four bundled scenarios have a lesson beside them."""
    stories = [os.path.basename(p).split("-", 1)[1] for p in BUNDLED[:4]]
    lesson_names = [os.path.basename(p).split("-", 1)[1] for p in LESSONS]
    topics = {"rfc-walkthrough.yaml": "rfc-walkthrough.yaml",
              "reboot-shipped-vs-rfc.yaml": "reboot.yaml",
              "unmodified-guest.yaml": "unmodified-guest.yaml",
              "who-guarantees-what.yaml": "who-guarantees-what.yaml"}
    assert [topics[s] for s in stories] == lesson_names[:4]
    for path in LESSONS:
        assert load_scenario(path).goals, path
