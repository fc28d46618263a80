"""The teaching pace from the page: the ``pace`` socket event and ``POST /api/machine/pace``
(real app, real machine); hostile payloads get a clear refusal, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest

MiB = 1024 * 1024


def test_pace_socket_event_sets_steps_and_reaches_the_view(browser):
    b = browser()
    b.ready()
    answer = b.emit("pace", {"pace_ms": 600, "pause_after_reset": True})
    assert answer["ok"] and answer["pace_ms"] == 600 and answer["pause_after_reset"] is True
    b.emit("set_requested_size", {"device": "vm0", "size": 192 * MiB})
    held = b.wait_view(lambda v: bool(v.get("pace") and v["pace"]["held"]))
    assert held["pace"]["held"][0]["type"] == "PLUG" and held["pace"]["pace_ms"] == 600
    kinds = [ev["kind"] for ev in b.events()]
    assert "request_held" in kinds and "pace" in kinds
    assert b.emit("pace", {"pace_ms": 0})["pace_ms"] == 0
    b.wait_view(lambda v: v["devices"]["vm0"]["plugged_size"] == 192 * MiB)
    assert b.emit("run", {"action": "pause"})["runstate"] == "paused"
    grow = b.emit("set_requested_size", {"device": "vm0", "size": 256 * MiB})
    assert grow["ok"], grow  # one request: the rest of the second memory block
    step = b.emit("pace", {"step": True})
    # running until the answer, or (full speed) already paused after it
    assert step["ok"] and (step["runstate"], step["stepping"]) in (("running", True),
                                                                    ("paused", False))
    view = b.wait_view(lambda v: v["runstate"] == "paused"
                       and v["devices"]["vm0"]["plugged_size"] == 256 * MiB)
    assert b.emit("pace", {"step": True})["ok"]  # nothing more to plug: it keeps running
    b.wait_view(lambda v: v["runstate"] == "running")
    assert view["pace"]["stepping"] is False


def test_the_view_carries_the_guests_memory_blocks(browser):
    b = browser()
    b.ready()
    view = b.wait_view(lambda v: [mb["zone"] for mb in v["devices"]["vm0"]["memory_blocks"]]
                       [:1] == ["Normal"], timeout=30)  # added and onlined by the guest
    vm0 = view["devices"]["vm0"]
    assert vm0["memory_block_size"] == 128 * MiB
    first = vm0["memory_blocks"][0]
    assert first["first_block"] == 0 and first["blocks"] == 64
    assert first["name"] == f"memory{vm0['addr'] // (128 * MiB)}" and first["zone"] == "Normal"


@pytest.mark.parametrize("body, why", [
    ({"pace_ms": -1}, "pace: must be between 0 and 10000"),
    ({"pace_ms": 10_001}, "pace: must be between 0 and 10000"),
    ({"pace_ms": "fast"}, "pace: 'fast' is not an integer"),
    ({"pace_ms": True}, "pace: expected an integer"),
    ({"pause_after_reset": "yes"}, "pause after reset: expected true or false"),
    ({"step": 1}, "step: expected true or false"),
    ([1, 2], ""),
])
def test_bad_pace_requests_are_refused_with_400(http, body: Any, why: str):
    answer = http.post("/api/machine/pace", json=body)
    assert answer.status_code == 400, answer.get_json()
    assert why in answer.get_json()["error"]
    ok = http.post("/api/machine/pace", json={}).get_json()
    assert ok["ok"] and ok["pace_ms"] == 0 and ok["held"] == []
