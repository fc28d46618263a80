"""QEMU's ACPI memory hotplug registers (device/acpi_memhp.py): what the guest's AML reads and
writes, and that no sequence of guest accesses can break the model or raise."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from device.acpi_memhp import (
    AcpiDeviceOst,
    AcpiMemoryHotplug,
    GenericEventDevice,
)
from device.events import Event
from device.pc_dimm import PcDimm

DIMM = PcDimm("dimm1", "d1", 0x1_4000_0000, 0x4000_0000, 1, 0, hotplugged=True)


class Rig:
    def __init__(self, slots: int = 4) -> None:
        self.events: list[Event] = []
        self.notified = 0
        self.ejected: list[int] = []
        self.mhp = AcpiMemoryHotplug(slots, self.events.append, self._notify, self._eject)

    def _notify(self) -> None:
        self.notified += 1

    def _eject(self, slot: int) -> bool:
        self.ejected.append(slot)
        self.mhp.unplugged(slot)
        return True


def test_plug_announces_and_the_registers_describe_the_dimm() -> None:
    rig = Rig()
    rig.mhp.plug(DIMM)
    assert rig.notified == 1
    rig.mhp.write(0x0, 4, 1)  # select slot 1
    assert rig.mhp.read(0x0) == 0x4000_0000 and rig.mhp.read(0x4) == 0x1
    assert rig.mhp.read(0x8) == 0x4000_0000 and rig.mhp.read(0xC) == 0
    assert rig.mhp.read(0x10) == 0
    assert rig.mhp.read(0x14) == 0b011  # enabled, inserting
    rig.mhp.write(0x14, 4, 2)  # clear the insert event
    assert rig.mhp.read(0x14) == 0b001
    rig.mhp.write(0x4, 4, 1)
    rig.mhp.write(0x8, 4, 0)
    assert rig.events == [AcpiDeviceOst({"device": "dimm1", "source": 1, "status": 0,
                                         "slot": "1", "slot-type": "DIMM"})]


def test_eject_only_an_enabled_slot_and_the_ost_record_stays() -> None:
    rig = Rig()
    rig.mhp.write(0x0, 4, 2)
    rig.mhp.write(0x14, 4, 8)  # nothing in slot 2: ignored
    assert rig.ejected == []
    rig.mhp.plug(DIMM)
    rig.mhp.unplug_request(1)
    rig.mhp.write(0x0, 4, 1)
    assert rig.mhp.read(0x14) == 0b111
    rig.mhp.write(0x14, 4, 4)
    rig.mhp.write(0x4, 4, 3)
    rig.mhp.write(0x8, 4, 0x84)
    rig.mhp.write(0x14, 4, 8)
    rig.mhp.write(0x8, 4, 0)
    assert rig.ejected == [1]
    assert rig.mhp.ospm_status()[1] == {"source": 3, "status": 0, "slot": "1",
                                        "slot-type": "DIMM"}
    assert [e.info for e in rig.events if isinstance(e, AcpiDeviceOst)] == [
        {"device": "dimm1", "source": 3, "status": 132, "slot": "1", "slot-type": "DIMM"},
        {"source": 3, "status": 0, "slot": "1", "slot-type": "DIMM"}]


def test_invalid_selector_ignores_every_other_write_and_unknown_reads_are_ones() -> None:
    rig = Rig()
    rig.mhp.plug(DIMM)
    rig.mhp.write(0x0, 4, 99)
    rig.mhp.write(0x8, 4, 5)
    rig.mhp.write(0x14, 4, 8)
    assert rig.events == [] and rig.ejected == []
    assert rig.mhp.read(0x14) == 0
    rig.mhp.write(0x0, 4, 1)
    assert rig.mhp.read(0x18) == 0xFFFF_FFFF


def test_ged_selector_is_read_and_cleared() -> None:
    irqs: list[int] = []
    ged = GenericEventDevice(lambda: irqs.append(1))
    ged.event(1)
    ged.event(1)
    assert irqs == [1, 1]
    assert ged.read(0) == 1 and ged.read(0) == 0
    ged.write(0, 4, 0xFFFF)
    assert ged.read(0) == 0


ACCESS = st.one_of(
    st.tuples(st.just("read"), st.integers(-8, 64), st.sampled_from([1, 2, 4, 8, 0, 3]),
              st.just(0)),
    st.tuples(st.just("write"), st.sampled_from([0x0, 0x4, 0x8, 0xC, 0x10, 0x14, 0x18, 3, -4]),
              st.sampled_from([1, 2, 4, 8]),
              st.one_of(st.integers(0, 16), st.integers(0, (1 << 64) - 1), st.integers(-9, -1))),
    st.tuples(st.just("host"), st.sampled_from(["plug", "unplug"]), st.integers(0, 5),
              st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.lists(ACCESS, max_size=60))
@example(1, [("host", "plug", 0, 0), ("write", 0x14, 1, 8), ("host", "plug", 0, 0)])  # re-plug
def test_any_guest_access_sequence_is_contained(slots: int, accesses: list[Any]) -> None:
    rig = Rig(slots)
    plugged: dict[int, PcDimm] = {}
    for kind, a, b, value in accesses:
        if kind == "read":
            out = rig.mhp.read(a, b)
            assert 0 <= out <= 0xFFFF_FFFF_FFFF_FFFF
        elif kind == "write":
            rig.mhp.write(a, b, value)
        elif a == "plug" and b < slots and b not in plugged:
            plugged[b] = PcDimm(f"d{b}", f"m{b}", 0x1_0000_0000 + b * (1 << 30), 1 << 30, b, 0,
                                hotplugged=True)
            rig.mhp.plug(plugged[b])
        elif a == "unplug" and b in plugged:
            rig.mhp.unplug_request(b)
        for slot in rig.ejected:  # ejected by this step (a slot can be plugged again later)
            plugged.pop(slot, None)
        rig.ejected.clear()
        # invariants: slots never change in number, a slot is enabled iff it holds a DIMM
        assert len(rig.mhp.devs) == slots
        for slot, mdev in enumerate(rig.mhp.devs):
            assert mdev.is_enabled == (mdev.dimm is not None)
            assert (slot in plugged) == (mdev.dimm is not None)
    assert all(isinstance(e, AcpiDeviceOst) and e.info["slot-type"] == "DIMM"
               for e in rig.events)
    state = rig.mhp.state()
    again = AcpiMemoryHotplug(slots, lambda e: None, lambda: None, lambda s: True)
    again.restore(state, plugged)
    assert again.ospm_status() == rig.mhp.ospm_status()
