"""Every Socket.IO event, against a real machine running the real guest."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.config import MiB
from emulator.snapshot import DeviceState
from tests.webapp.conftest import device, settled_view, wait_model
from webapp import ext
from webapp.block_states import PLUGGED_CODES, BlockState

EVENTS = ["ping_vmem", "resync", "set_requested_size", "guest", "reboot", "run", "speed",
          "hmp", "block_info", "machine_info", "new_machine", "rfc_shrink_on_reboot"]


def codes(dev: dict, key: str = "guest") -> bytes:
    value = dev[key]
    return value if isinstance(value, bytes) else base64.b64decode(value)


def test_connect_sends_keyframe_with_the_machine(browser):
    b = browser()
    frame = b.keyframe()
    view = frame["view"]
    assert list(view["devices"]) == ["vm0", "vm1"]
    vm0 = device(view, "vm0")
    assert vm0["nb_blocks"] == 128
    assert len(codes(vm0)) == 128 and len(codes(vm0, "host")) == 128
    assert set(vm0) >= set(DeviceState.__annotations__) - {"bitmap"}  # the keyframe's shape
    assert frame["capabilities"] == {"step": True, "speed": True}
    assert frame["memory_devices"][0]["data"]["id"] == "vm0"


def test_set_requested_size_plugs_and_page_numbers_match_qmp(browser):
    b = browser()
    b.ready()
    answer = b.emit("set_requested_size", {"device": "vm0", "size": 128 * MiB})
    assert answer == {"ok": True, "device": "vm0", "requested_size": 128 * MiB}
    view = b.wait_view(settled_view("vm0", 128 * MiB))
    vm0 = device(view, "vm0")
    model = wait_model(b, lambda m: m["vm0"]["seq"] >= view["seq"])
    plugged_codes = sum(1 for c in model["vm0"]["guest"] if c in PLUGGED_CODES)
    assert plugged_codes == 64 == vm0["plugged_blocks"]
    host_plugged = sum(1 for c in model["vm0"]["host"] if c in PLUGGED_CODES)
    assert host_plugged == 64
    # "the page never lies": the view's numbers equal query-memory-devices
    qmp = {d["data"]["id"]: d["data"] for d in view["memory_devices"]}
    assert qmp["vm0"]["size"] == vm0["plugged_size"] == 128 * MiB
    assert qmp["vm0"]["requested-size"] == 128 * MiB
    # the events may trail the view that already includes them (the view's seq says so)
    b.wait_for(lambda m: m["name"] == "batch" and any(
        ev["kind"] == "block_state" and ev["device"] == "vm0" for ev in m["args"][0]["events"]))
    kinds = {ev["kind"] for ev in b.events()}
    assert {"config_change", "request", "response", "block_state"} <= kinds
    plugs = [ev for ev in b.events() if ev["kind"] == "request" and ev["type"] == "PLUG"
             and ev["device"] == "vm0"]
    assert plugs


def test_set_requested_size_accepts_strings_and_rejects_bad_values(browser):
    b = browser()
    b.ready()
    assert b.emit("set_requested_size", {"device": "vm1", "size": "64M"})["ok"]
    bad = b.emit("set_requested_size", {"device": "vm1", "size": 3 * MiB})
    assert bad["ok"] is False
    assert bad["error"] == "'requested-size' has to be multiples of 'block-size' (0x200000)"
    too_big = b.emit("set_requested_size", {"device": "vm1", "size": "1G"})
    assert "cannot exceed the memory backend size" in too_big["error"]
    assert "unknown device" in b.emit("set_requested_size", {"device": "nope", "size": 0})["error"]
    assert "not a size" in b.emit("set_requested_size", {"device": "vm0", "size": "lots"})["error"]
    assert b.emit("set_requested_size", "not an object")["ok"] is False
    assert b.emit("machine_info")["runstate"] == "running"


def test_guest_actions_alloc_verify_free_dump_and_rogue_write(browser):
    b = browser()
    b.ready()
    alloc = b.emit("guest", {"action": "alloc", "size": 4, "unmovable": True, "target": "vm0"})
    assert alloc["ok"] and alloc["unmovable"] and alloc["pages"] == 1024
    wait_model(b, lambda m: BlockState.PLUGGED_UNMOVABLE in m["vm0"]["guest"])
    assert b.emit("machine_info")["allocations"][0]["unmovable"] is True
    verify = b.emit("guest", {"action": "verify", "id": alloc["id"]})
    assert verify["ok"] and verify["bad"] == 0 and verify["checked"] == 1024
    assert b.emit("guest", {"action": "touch", "id": alloc["id"]})["ok"]
    dump = b.emit("guest", {"action": "dump"})
    assert dump["ok"] and dump["bytes"] > 0
    rogue = b.emit("guest", {"action": "rogue_write", "device": "vm1"})
    assert rogue["ok"] and rogue["stored"] is True  # shipped QEMU: nothing stops it
    b.wait_for(lambda m: m["name"] == "batch"
               and any(ev["kind"] == "unplugged_write" for ev in m["args"][0]["events"]))
    legacy = b.emit("guest", {"action": "dump", "legacy": True})
    assert legacy["ok"] and legacy["variant"] == "legacy" and legacy["bytes"] >= dump["bytes"]
    freed = b.emit("guest", {"action": "free", "id": alloc["id"]})
    assert freed["ok"] and freed["pages"] == 1024
    assert b.emit("guest", {"action": "free", "id": 999})["ok"] is False
    assert b.emit("guest", {"action": "format-disk"})["ok"] is False
    assert b.emit("guest", {"action": "alloc", "size": -5})["ok"] is False


def test_reboot_unplugs_everything_and_the_guest_plugs_back(browser):
    b = browser()
    b.ready()
    b.wait_view(settled_view("vm0", 64 * MiB))
    assert b.emit("reboot", {"mode": "reset"}) == {"ok": True, "mode": "reset",
                                                   "cmdline": "memhp_default_state=online"}
    b.wait_for(lambda m: m["name"] == "batch"
               and any(ev["kind"] == "reset" for ev in m["args"][0]["events"]))
    events = b.events()
    reset_at = next(i for i, ev in enumerate(events) if ev["kind"] == "reset")
    reset_seq = events[reset_at]["seq"]
    settled = settled_view("vm0", 64 * MiB)
    b.wait_view(lambda v: v["seq"] > reset_seq and settled(v) and v["guest_booted"])
    b.wait_for(lambda m: m["name"] == "batch" and any(
        ev["kind"] == "block_state" and ev["plugged"] and ev["seq"] > reset_seq
        for ev in m["args"][0]["events"]))
    events = b.events()
    # the device unplugs everything first (QEMU's system reset), then the new guest replugs
    before = [ev for ev in events[:reset_at] if ev["kind"] == "block_state"]
    assert before and not before[-1]["plugged"]
    unplugged = sum(ev["count"] for ev in before if ev["device"] == "vm0" and not ev["plugged"])
    assert unplugged == 32
    plugs = [ev for ev in events[reset_at:] if ev["kind"] == "block_state" and ev["plugged"]]
    assert sum(ev["count"] for ev in plugs if ev["device"] == "vm0") == 32


def test_reboot_without_driver_leaves_everything_unplugged(browser):
    b = browser()
    b.ready()
    answer = b.emit("reboot", {"mode": "no-driver"})
    # the driver goes; the machine's other boot options stay
    assert answer["cmdline"] == "memhp_default_state=online modprobe.blacklist=virtio_mem"
    view = b.wait_view(lambda v: v["cmdline"] == answer["cmdline"]
                       and all(d["plugged_size"] == 0 for d in v["devices"].values()))
    model = wait_model(b, lambda m: m["vm0"]["seq"] >= view["seq"])
    assert set(model["vm0"]["guest"]) <= {BlockState.UNPLUGGED, BlockState.OUTSIDE_USABLE}
    assert set(model["vm0"]["host"]) <= {BlockState.UNPLUGGED, BlockState.OUTSIDE_USABLE}
    # back to the driver: the machine's own command line again
    own = "memhp_default_state=online"
    assert b.emit("reboot", {"mode": "driver"})["cmdline"] == own
    settled = settled_view("vm0", 64 * MiB)
    b.wait_view(lambda v: v["seq"] > view["seq"] and v["cmdline"] == own and settled(v))
    assert b.emit("reboot", {"mode": "sideways"})["ok"] is False


def test_pause_resume_step_and_speed(browser):
    b = browser()
    b.ready()
    assert b.emit("run", {"action": "pause"}) == {"ok": True, "action": "pause",
                                                   "runstate": "paused"}
    busy = b.emit("guest", {"action": "dump"})
    assert busy["ok"] is False and "resume it first" in busy["error"]
    step = b.emit("run", {"action": "step", "instructions": 3})
    assert step["ok"] and step["runstate"] == "paused" and step["pc"] > 0
    assert b.emit("run", {"action": "resume"})["runstate"] == "running"
    running = b.emit("run", {"action": "step"})
    assert running["ok"] is False and "paused" in running["error"]
    assert b.emit("speed", {"factor": 0.5}) == {"ok": True, "factor": 0.5}
    assert b.emit("speed", {"factor": 1}) == {"ok": True, "factor": 1}
    assert b.emit("speed", {"factor": 7})["ok"] is False
    assert b.emit("run", {"action": "explode"})["ok"] is False


def test_hmp_answers_text(browser):
    b = browser()
    b.keyframe()
    answer = b.emit("hmp", {"line": "info memory-devices"})
    assert answer["ok"] and isinstance(answer["output"], str) and answer["output"]
    assert b.emit("hmp", {"line": ""}) == {"ok": True, "output": ""}
    assert b.emit("hmp", {"line": 42})["ok"] is False


def test_block_info_for_hover(browser):
    b = browser()
    b.ready()
    b.wait_view(settled_view("vm0", 64 * MiB))
    info = b.emit("block_info", {"device": "vm0", "block": 0})
    assert info["ok"] and info["plugged"] is True and info["size"] == 2 * MiB
    assert info["guest_state"].startswith("plugged")
    last = b.emit("block_info", {"device": "vm0", "block": 127})
    assert last["plugged"] is False and last["resident"] == 0
    assert b.emit("block_info", {"device": "vm0", "block": 128})["ok"] is False
    assert b.emit("block_info", {"device": "vm0", "block": "x"})["ok"] is False


def test_new_machine_from_the_form_and_bad_forms(browser):
    b = browser()
    first = b.keyframe()
    answer = b.emit("new_machine", {"boot_ram": 64, "nodes": 1, "device_size": 128,
                                    "requested_size": 16, "block_size": 4})
    assert answer["ok"], answer
    frame = b.wait_for(lambda m: m["name"] == "keyframe"
                       and m["args"][0]["generation"] > first["generation"])["args"][0]
    devs = frame["view"]["devices"]
    assert [(dev_id, d["nb_blocks"], d["block_size"]) for dev_id, d in devs.items()] == [
        ("vm0", 32, 4 * MiB)]
    huge = b.emit("new_machine", {"device_size": 1 << 20, "nodes": 8})
    assert huge["ok"] is False and "limit" in huge["error"]
    too_much = b.emit("new_machine", {"device_size": 4096, "nodes": 4, "block_size": 64})
    assert too_much["ok"] is False and "at most 8192 MiB per machine" in too_much["error"]
    assert b.emit("new_machine", {"block_size": 3})["ok"] is False  # QEMU: power of two
    assert b.emit("new_machine", {"colour": "red"})["ok"] is False
    assert b.emit("new_machine", {"preset": "default"})["ok"]


def test_rfc_shrink_on_reboot_starts_a_new_machine(browser):
    b = browser()
    first = b.keyframe()
    assert first["rfc_shrink_on_reboot"] is False
    assert b.emit("rfc_shrink_on_reboot", {"enabled": True})["ok"]
    frame = b.wait_for(lambda m: m["name"] == "keyframe"
                       and m["args"][0]["generation"] > first["generation"])["args"][0]
    assert frame["rfc_shrink_on_reboot"] is True
    assert b.emit("rfc_shrink_on_reboot", {"enabled": "yes"})["ok"] is False


def test_resync_ping_machine_info_and_unknown_events(browser):
    b = browser()
    b.keyframe()
    before = len([m for m in b.received if m["name"] == "keyframe"])
    assert b.emit("resync") == {"ok": True}
    b.wait_for(lambda m: m["name"] == "keyframe"
               and len([x for x in b.received if x["name"] == "keyframe"]) > before)
    assert b.emit("ping_vmem")["ok"]
    info = b.emit("machine_info")
    assert info["memory_devices"][1]["data"]["id"] == "vm1"
    unknown = b.emit("format_c_drive", {"now": True})
    assert unknown["ok"] is False and "unknown event" in unknown["error"]


def test_two_browsers_never_see_each_others_machines(browser, app):
    a, c = browser(), browser()
    a.ready()
    c.ready()
    assert len(ext.sessions(app)) == 2
    a.emit("set_requested_size", {"device": "vm0", "size": 160 * MiB})
    a.wait_view(settled_view("vm0", 160 * MiB))
    c.pull()
    for msg in c.received:
        payload = msg["args"][0]
        if msg["name"] == "batch":
            assert all(ev.get("kind") != "block_state" or ev["first_block"] < 32
                       for ev in payload["events"])
    view = c.emit("machine_info")
    assert device(view, "vm0")["requested_size"] == 64 * MiB


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=st.sampled_from(EVENTS),
       data=st.one_of(st.none(), st.integers(), st.text(max_size=20),
                      st.lists(st.integers(), max_size=3),
                      st.dictionaries(st.sampled_from(["device", "size", "action", "mode",
                                                       "line", "block", "factor", "id",
                                                       "enabled", "nodes", "boot_ram"]),
                                      st.one_of(st.none(), st.booleans(),
                                                st.integers(-2**70, 2**70),
                                                st.floats(allow_nan=True),
                                                st.text(max_size=12)),
                                      max_size=4)))
def test_any_payload_gets_an_answer_never_a_traceback(shared_browser, event, data):
    if event in ("new_machine", "rfc_shrink_on_reboot", "reboot") and isinstance(data, dict):
        data = {**data, "nodes": 99}  # keep the fuzzed machine alive (invalid form)
        if event == "reboot":
            data = {"mode": 5}
    answer = shared_browser.emit(event, data)
    assert isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and "Traceback" not in answer["error"]
        assert "internal error" not in answer["error"], answer
    machine = shared_browser.emit("machine_info")
    assert machine["ok"] and machine["runstate"] in ("running", "paused")
