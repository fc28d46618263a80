"""The real guest on 4 KiB TLB pages, under the native and the Python stage-2 fill.

Everything a user can observe -- plugging, unplugging, reads of unplugged memory through the
zero page, rogue writes under each policy (shipped QEMU: through; dynamic-memslots: an abort
where no memslot is mapped; x-rfc-write-protect: refused), both kdump variants -- must come
out the same whichever fill answers the TLB misses.
"""

from __future__ import annotations

from typing import Any

import pytest

from device.events import VirtioRequest
from emulator import Machine, MachineConfig, MemoryDeviceConfig, abi, native_stage2, stage2
from emulator.config import MiB
from emulator.events import UnpluggedWrite, Violation, ZeroPageRead
from emulator.workload import Workload
from tests.conftest import MachineFactory, wait_settled

FILLS = ["native", "python"]


def _use_fill(monkeypatch: pytest.MonkeyPatch, fill: str) -> None:
    if fill == "native" and native_stage2.load() is None:
        pytest.skip(f"native fill: {native_stage2.unavailable_reason()}")
    monkeypatch.setenv(stage2.FILL_ENV, fill)


def _three_policies() -> MachineConfig:
    """vm0 shipped QEMU, vm1 dynamic-memslots (2 GiB: two 1 GiB memslots), vm2 the RFC's."""
    return MachineConfig(boot_ram=64 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", size=512 * MiB, requested_size=128 * MiB),
        MemoryDeviceConfig(id="vm1", size=2048 * MiB, requested_size=128 * MiB,
                           dynamic_memslots=True),
        MemoryDeviceConfig(id="vm2", size=512 * MiB, requested_size=128 * MiB,
                           rfc_write_protect=True)])


def _story(machine: Machine) -> dict[str, Any]:
    """Drive the guest through what a lesson does; return everything observable."""
    wait_settled(machine)
    dev = machine.devices["vm0"]
    work = Workload(machine)
    seen: dict[str, Any] = {"addr": {d: machine.devices[d].addr for d in machine.devices},
                            "booted_with": dev.plugged_runs()}
    alloc = work.alloc(8 * MiB, target="vm0")
    seen["verify"] = work.verify(alloc)
    unplugged = dev.addr + 200 * MiB
    read = work.read(unplugged + 0x18)
    seen["read_unplugged"] = (read.status, read.values)
    for dev_id, offset in (("vm0", 300 * MiB), ("vm1", 300 * MiB), ("vm1", 1536 * MiB),
                           ("vm2", 300 * MiB)):
        rogue = work.rogue_write(machine.devices[dev_id].addr + offset)
        seen[f"rogue_write {dev_id}+{offset >> 20}M"] = (rogue.status, rogue.values)
    seen["resident"] = {d: machine.regions[d].resident_bytes() for d in machine.devices}
    seen["dump"] = [work.dump(d) for d in machine.devices]
    seen["dump_legacy"] = [work.dump(d, legacy=True) for d in machine.devices]
    machine.set_requested_size("vm0", 256 * MiB)
    wait_settled(machine)
    seen["grown"] = dev.plugged_runs()
    machine.set_requested_size("vm0", 32 * MiB)
    wait_settled(machine)
    seen["shrunk"] = dev.plugged_runs()
    seen["verify_after"] = work.verify(alloc)
    events = [r.event for r in machine.bus.since(0)]
    seen["violations"] = [(v.device, v.addr, v.pc, v.access, v.reason)
                          for v in events if isinstance(v, Violation)]
    # runs are cut where slices end (timing); the blocks read are not
    seen["zero_read_blocks"] = sorted({
        (z.device, b) for z in events if isinstance(z, ZeroPageRead)
        for b in range(z.first_block, z.first_block + z.count)})
    seen["written_blocks"] = sorted({
        (w.device, b) for w in events if isinstance(w, UnpluggedWrite)
        for b in range(w.first_block, w.first_block + w.count)})
    seen["runstate"] = machine.runstate
    guest = machine.snapshot().guest
    assert guest is not None
    seen["faults"] = guest.faults
    return seen


def test_the_guest_sees_the_same_machine_under_both_fills(
        make_machine: MachineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    stories = {}
    for fill in FILLS:
        _use_fill(monkeypatch, fill)
        machine = make_machine(_three_policies())
        assert machine.board.stage2.kind == fill
        assert machine.board.uc.ctl_get_page_size() == stage2.TLB_PAGE_SIZE == 4096
        stories[fill] = _story(machine)
        machine.close()
    native, python = stories["native"], stories["python"]
    assert native == python
    # and it is the right story, not the same wrong one twice
    addr = native["addr"]
    assert native["read_unplugged"][0] == 0
    assert native["rogue_write vm0+300M"] == (0, (addr["vm0"] + 300 * MiB, 0xDEADBEEFDEADBEEF))
    assert native["rogue_write vm1+300M"][0] == 0  # memslot 0 is mapped: it goes through
    assert native["rogue_write vm1+1536M"][0] == -abi.EFAULT  # memslot 1: nothing there
    assert native["rogue_write vm2+300M"][0] == -abi.EFAULT  # write-protected
    assert native["verify"] == native["verify_after"] == (0, 8 * MiB // 4096)
    assert [(d, a - addr[d], acc) for d, a, _pc, acc, _why in native["violations"]] == [
        ("vm1", 1536 * MiB, "write"), ("vm2", 300 * MiB, "write")]
    assert ("vm0", 100) in native["zero_read_blocks"]  # the read at +200 MiB, 2 MiB blocks
    assert native["written_blocks"] == [("vm0", 150), ("vm1", 150)]
    # the host backs the allocation and each write that went through: one page each
    assert native["resident"] == {"vm0": 8 * MiB + 4096, "vm1": 4096, "vm2": 0}
    # Linux's kdump reads only plugged blocks; the legacy one every page of the added memory
    # blocks -- here one 128 MiB memory block per device, all plugged: the same bytes
    assert native["dump"] == native["dump_legacy"] == [
        (128 * MiB, 8 * MiB // 4096), (128 * MiB, 0), (128 * MiB, 0)]
    assert native["runstate"] == "running" and native["faults"] == 2


@pytest.mark.parametrize("fill", FILLS)
def test_eight_virtio_slots_in_one_tlb_page(
        fill: str, make_machine: MachineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """All eight 0x200-byte virtio-mmio slots now share one 4 KiB TLB page (with 1 KiB pages
    they spread over four): every device must still get its own registers and requests."""
    _use_fill(monkeypatch, fill)
    assert abi.MAX_DEVICES * abi.VIRTIO_MMIO_STRIDE <= stage2.TLB_PAGE_SIZE
    devices = [MemoryDeviceConfig(id=f"vm{i}", size=128 * MiB, requested_size=(i + 1) * 8 * MiB)
               for i in range(abi.MAX_DEVICES)]
    machine = make_machine(MachineConfig(boot_ram=64 * MiB, devices=devices))
    wait_settled(machine)
    for i, (dev_id, dev) in enumerate(machine.devices.items()):
        assert dev.plugged_size == (i + 1) * 8 * MiB, dev_id
        assert dev.driver_features  # each driver negotiated through its own slot
    plugs = [r.event for r in machine.bus.since(0)
             if isinstance(r.event, VirtioRequest) and r.event.type == "PLUG"]
    for p in plugs:
        dev = machine.devices[p.device]
        assert dev.addr <= p.addr < dev.addr + dev.region_size
    assert {p.device for p in plugs} == set(machine.devices)
    machine.set_requested_size("vm5", 0)
    wait_settled(machine)
    assert machine.devices["vm5"].plugged_size == 0
    assert machine.devices["vm4"].plugged_size == 40 * MiB
