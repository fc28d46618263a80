"""Pure units: block codes from snapshots, input parsing, session limits and idle reclaim."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import abi
from emulator.config import GiB, MiB
from emulator.snapshot import DeviceSnapshot, MachineSnapshot, NodeSnapshot, machine_state
from tests.webapp.conftest import web_config
from webapp import inputs, view_model
from webapp.block_states import BlockState
from webapp.inputs import InputError
from webapp.sessions import SessionManager, Settings


def dev_snapshot(bitmap: bytes, usable_blocks: int, resident=None, dev_id: str = "vm0",
                 node: int = 0) -> DeviceSnapshot:
    bs = 2 * MiB
    return DeviceSnapshot(
        id=dev_id, node=node, addr=0x1_0000_0000, region_size=len(bitmap) * bs, block_size=bs,
        nb_blocks=len(bitmap), usable_region_size=usable_blocks * bs,
        plugged_size=bitmap.count(1) * bs, requested_size=bitmap.count(1) * bs,
        device_features=0, driver_features=0, unplugged_inaccessible=False, broken=False,
        bitmap=bitmap, driver_state="idle", resident=resident)


def test_guest_codes_follow_the_guests_usage():
    dev = dev_snapshot(bytes([1, 1, 1, 1, 0, 0, 0, 0]), usable_blocks=6)
    usage = ((0, 0, 512, abi.BLOCK_PLUGGED), (10, 0, 502, abi.BLOCK_PLUGGED),
             (10, 3, 499, abi.BLOCK_PLUGGED), (0, 0, 512, abi.BLOCK_OFFLINING),
             (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0))
    assert list(view_model.guest_codes(dev, usage)) == [
        BlockState.PLUGGED_FREE, BlockState.PLUGGED_MOVABLE, BlockState.PLUGGED_UNMOVABLE,
        BlockState.IN_FLIGHT, BlockState.UNPLUGGED, BlockState.UNPLUGGED,
        BlockState.OUTSIDE_USABLE, BlockState.OUTSIDE_USABLE]
    # without a guest view (no driver yet) the bitmap alone decides
    assert list(view_model.guest_codes(dev, ()))[:4] == [BlockState.PLUGGED_FREE] * 4


def test_host_codes_show_residency_even_behind_unplugged_blocks():
    bs = 2 * MiB
    dev = dev_snapshot(bytes([1, 1, 1, 0, 0]), usable_blocks=4,
                       resident=(0, 4096, bs, 0, 4096))
    assert list(view_model.host_codes(dev)) == [
        BlockState.HOST_PLUGGED_EMPTY, BlockState.HOST_PARTLY_RESIDENT, BlockState.HOST_RESIDENT,
        BlockState.UNPLUGGED, BlockState.HOST_UNPLUGGED_RESIDENT]


def test_encode_view_sends_codes_only_when_changed():
    view: Any = {"seq": 1, "devices": {"vm0": {"bitmap": "01", "guest": b"\x01",
                                               "host": b"\x06", "plugged_size": 2}}}
    first = view_model.encode_view(view)
    assert first["devices"] == {"vm0": {"guest": "AQ==", "host": "Bg==", "plugged_size": 2}}
    again = view_model.encode_view(view, previous=view)
    assert again["devices"] == {"vm0": {"plugged_size": 2}}


def machine_snapshot() -> MachineSnapshot:
    devices = (dev_snapshot(bytes([1, 1, 0, 0]), 3, resident=(2 * MiB, 4096, 0, 0)),
               dev_snapshot(bytes([0, 1]), 2, dev_id="vm1", node=1))
    return MachineSnapshot(
        seq=7, runstate="running", uptime_ns=5, boot_ram_size=64 * MiB, cmdline="x=1",
        guest_booted=True, guest_faults=0,
        nodes=(NodeSnapshot(0, (0,), 32 * MiB, 4 * MiB), NodeSnapshot(1, (1,), 32 * MiB, 2 * MiB)),
        devices=devices, guest=None, host_rss=123, boot_resident=MiB)


def test_the_view_is_the_keyframes_state_plus_live_measurements():
    """One serialisation: a recording's keyframe (machine_state) is inside the page's view."""
    snap = machine_snapshot()
    state = machine_state(snap)
    view = view_model.machine_view(snap)
    assert list(view["devices"]) == list(state["devices"]) == ["vm0", "vm1"]
    plain: dict[str, Any] = dict(view)
    for key, value in state.items():
        if key != "devices":
            assert plain[key] == value, key
    for dev_id, dev in state["devices"].items():
        shown: dict[str, Any] = dict(view["devices"][dev_id])
        assert {k: shown[k] for k in dev} == dev
    vm0 = view["devices"]["vm0"]
    assert vm0["guest"] == bytes([BlockState.PLUGGED_FREE] * 2 + [BlockState.UNPLUGGED,
                                                                  BlockState.OUTSIDE_USABLE])
    assert vm0["resident"] == 2 * MiB + 4096 and view["resident"] == MiB + vm0["resident"]
    assert state["devices"]["vm1"]["bitmap"] == "0001"
    sent = view_model.encode_view(view)
    assert "bitmap" not in sent["devices"]["vm0"]  # the codes carry it
    assert json_round_trip(sent) == sent


def json_round_trip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


@pytest.mark.parametrize(("text", "expected"), [
    ("512M", 512 * MiB), ("1G", GiB), ("2 MiB", 2 * MiB), ("4096", 4096), ("1.5G", 3 * GiB // 2),
    ("64k", 64 * 1024), (0, 0), (1024, 1024)])
def test_sizes(text, expected):
    assert inputs.size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "-1", "1Q", True, None, [1], {"a": 1}, 2**60,
                                 "9" * 40, float("nan")])
def test_bad_sizes(bad):
    with pytest.raises(InputError):
        inputs.size(bad)


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none(), st.booleans()))
def test_size_parser_never_crashes(value):
    try:
        result = inputs.size(value)
    except InputError:
        return
    assert 0 <= result <= inputs.MAX_SIZE


@given(st.dictionaries(st.sampled_from(["boot_ram", "nodes", "block_size", "device_size",
                                        "requested_size", "unplugged_inaccessible",
                                        "rfc_shrink_on_reboot", "cmdline", "devices"]),
                       st.one_of(st.integers(-5, 10_000), st.text(max_size=8), st.booleans(),
                                 st.none(), st.lists(st.integers(), max_size=2))))
def test_machine_form_never_crashes(form):
    try:
        cfg = inputs.machine_config(form, max_memory=8 * GiB, max_blocks=16_384)
    except InputError:
        return
    assert cfg.boot_ram + sum(d.size for d in cfg.devices) <= 8 * GiB


def test_config_form_round_trip():
    cfg = web_config()
    again = inputs.machine_config(inputs.config_to_form(cfg), max_memory=8 * GiB,
                                  max_blocks=16_384)
    assert again.boot_ram == cfg.boot_ram
    assert [(d.id, d.size, d.requested_size, d.node, d.block_size) for d in again.devices] == \
        [(d.id, d.size, d.requested_size, d.node, d.block_size) for d in cfg.devices]


def test_idle_machines_are_paused_then_reclaimed():
    sent: list[tuple[str, str]] = []
    manager = SessionManager(
        Settings(idle_pause=0.2, idle_reclaim=0.8, emit_hz=50, max_machines=2),
        lambda event, data, to: sent.append((event, to)), web_config)
    try:
        sess = manager.connect("token-a", "sid-1")
        assert sess.machine is not None
        manager.disconnect("token-a", "sid-1")
        deadline = time.monotonic() + 5
        while not sess.idle_paused:
            assert time.monotonic() < deadline, "never paused"
            time.sleep(0.02)
        assert sess.machine.runstate == "paused"
        again = manager.connect("token-a", "sid-2")  # coming back resumes it
        assert again is sess and sess.machine.runstate == "running"
        manager.disconnect("token-a", "sid-2")
        while manager.get("token-a") is not None or sess.machine is not None:
            assert time.monotonic() < deadline + 5, "never reclaimed"
            time.sleep(0.02)
        assert ("keyframe", sess.room) in sent
    finally:
        manager.close_all()


def test_full_server_reclaims_an_idle_machine_before_refusing():
    manager = SessionManager(Settings(max_machines=1, idle_pause=60, idle_reclaim=600),
                             lambda *a: None, web_config)
    try:
        manager.connect("a", "s1")
        with pytest.raises(InputError, match="limit"):
            manager.session("b")  # "a" has a browser connected
        manager.disconnect("a", "s1")
        idle = manager.get("a")
        assert idle is not None
        idle.last_seen -= 10  # idle for a while
        assert manager.session("b") is not None
        assert manager.get("a") is None
    finally:
        manager.close_all()


def test_a_machine_being_saved_after_its_reclaim_still_counts():
    """The reclaim saves a machine before closing it (off the pump's thread): until it is
    closed it holds memory and CPU, so /healthz's ``machines`` still counts it (a benchmark
    waiting for "no machines" once measured the last round's saves as this round's cost)."""
    release = threading.Event()
    manager = SessionManager(
        Settings(idle_pause=0.1, idle_reclaim=0.3, emit_hz=50, max_machines=2),
        lambda *a: None, web_config)

    def slow_save(_sess: object) -> None:
        release.wait(10)

    manager.on_reclaim.append(slow_save)
    try:
        manager.connect("token-a", "sid-1")
        manager.disconnect("token-a", "sid-1")
        deadline = time.monotonic() + 10
        while manager.get("token-a") is not None:
            assert time.monotonic() < deadline, "never reclaimed"
            time.sleep(0.02)
        stats = manager.stats()
        assert stats["machines"] == 1 and stats["retiring"] == 1
        release.set()
        while manager.stats()["machines"]:
            assert time.monotonic() < deadline, "never closed"
            time.sleep(0.02)
        assert manager.stats()["retiring"] == 0
    finally:
        release.set()
        manager.close_all()
