"""The balloon through the page's socket: one event (``balloon``) and two guest actions,
all on the control layer; bad input is a clear refusal and the machine keeps running."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.config import MiB
from webapp.inputs import InputError, balloon_config, config_to_form, machine_config


def balloon_machine(b, **opts):
    b.ready()
    b.pull()
    b.received.clear()  # from here on, only the new machine's messages
    answer = b.emit("new_machine", {"boot_ram": 128, "nodes": 1, "device_size": 128,
                                    "requested_size": 0, "balloon": opts or True})
    assert answer["ok"], answer
    assert answer["config"]["balloon"] == {"deflate_on_oom": bool(opts.get("deflate_on_oom")),
                                           "free_page_reporting": False}
    b.wait_view(lambda v: v["guest_booted"])  # the keyframe or a later view, whichever says so


def wait_balloon(b, size: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = b.emit("balloon", {"action": "query"})
        assert info["ok"], info
        if info["actual"] == size and info["driver-state"] == "idle":
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.02)


def test_balloon_target_query_and_stats(browser):
    b = browser()
    balloon_machine(b)
    info = wait_balloon(b, 128 * MiB)
    assert info == {"ok": True, "action": "query", "id": "balloon0", "actual": 128 * MiB,
                    "target": 128 * MiB, "ram-size": 128 * MiB, "balloon-pages": 0,
                    "driver-state": "idle", "deflate-on-oom": False,
                    "free-page-reporting": False}
    answer = b.emit("balloon", {"action": "target", "size": "64M"})
    assert answer["ok"] and answer["target"] == 64 * MiB
    assert wait_balloon(b, 64 * MiB)["balloon-pages"] == 16384
    assert b.emit("balloon", {"action": "target", "size": 96})["target"] == 96 * MiB  # MiB
    stats = b.emit("balloon", {"action": "stats"})
    assert stats["ok"] and stats["stats"]["stat-total-memory"] > 0 and stats["last-update"] > 0
    assert b.emit("balloon", {"action": "poll_interval", "seconds": 2})["ok"]
    refused = b.emit("balloon", {"action": "target", "size": 0})
    assert refused == {"ok": False, "error": "Parameter 'target' expects a size",
                       "status": 400}


def test_rogue_deflate_and_pressure_from_the_page(browser):
    b = browser()
    balloon_machine(b, deflate_on_oom=True)
    b.emit("balloon", {"action": "target", "size": 32})
    wait_balloon(b, 32 * MiB)
    rogue = b.emit("guest", {"action": "balloon_rogue", "pages": 512})
    assert rogue["ok"] and rogue["pages"] == 512 and rogue["bad"] == 0
    assert rogue["message"].startswith("reused 512 balloon pages")
    pressure = b.emit("guest", {"action": "pressure", "size": 64})
    assert pressure["ok"] and pressure["pages"] == 16384 and pressure["balloon-deflated"] > 0
    info = b.emit("balloon", {"action": "query"})
    assert info["actual"] > info["target"] == 32 * MiB


def test_no_balloon_is_a_clear_refusal(browser):
    b = browser()
    b.ready()
    for data in ({"action": "query"}, {"action": "target", "size": 64}):
        assert b.emit("balloon", data) == {
            "ok": False, "error": "No balloon device has been activated", "status": 409}
    assert b.emit("guest", {"action": "balloon_rogue", "pages": 1})["status"] == 409
    assert b.emit("ping_vmem")["ok"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers()),
                      st.dictionaries(st.sampled_from(["action", "size", "seconds", "pages"]),
                                      st.one_of(st.none(), st.booleans(), st.integers(),
                                                st.floats(allow_nan=True), st.text(max_size=12),
                                                st.sampled_from(["target", "query", "stats",
                                                                 "poll_interval", "-1",
                                                                 "1e400", "512M"])))))
def test_hostile_balloon_payloads_never_break_the_machine(shared_browser, data):
    answer = shared_browser.emit("balloon", data)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)
    if not answer["ok"]:
        assert "internal error" not in answer["error"]
    assert shared_browser.emit("ping_vmem")["ok"]


def test_form_round_trip_keeps_the_balloon():
    cfg = machine_config({"balloon": {"deflate_on_oom": True}}, max_memory=1 << 40,
                         max_blocks=1 << 20)
    assert cfg.balloon is not None and cfg.balloon.deflate_on_oom
    again = machine_config(config_to_form(cfg), max_memory=1 << 40, max_blocks=1 << 20)
    assert again.balloon == cfg.balloon
    assert balloon_config(None) is None and balloon_config(False) is None
    for bad in ({"colour": 1}, {"deflate_on_oom": "yes"}, 7, "on"):
        try:
            balloon_config(bad)
        except InputError:
            continue
        raise AssertionError(f"accepted {bad!r}")
