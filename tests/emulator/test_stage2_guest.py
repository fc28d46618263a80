"""The real guest on 4 KiB TLB pages, under the native and the Python stage-2 fill.

Everything a user can observe -- plugging, unplugging, reads of unplugged memory through the
zero page, a refused rogue write, a kdump-style dump, UNPLUGGED_INACCESSIBLE -- must come out
the same whichever fill answers the TLB misses.
"""

from __future__ import annotations

from typing import Any

import pytest

from device.events import VirtioRequest
from emulator import Machine, MachineConfig, MemoryDeviceConfig, abi, native_stage2, stage2
from emulator.config import MiB
from emulator.events import Violation, ZeroPageRead
from emulator.workload import Workload
from tests.conftest import MachineFactory, small_config, wait_settled

FILLS = ["native", "python"]


def _use_fill(monkeypatch: pytest.MonkeyPatch, fill: str) -> None:
    if fill == "native" and native_stage2.load() is None:
        pytest.skip(f"native fill: {native_stage2.unavailable_reason()}")
    monkeypatch.setenv(stage2.FILL_ENV, fill)


def _story(machine: Machine) -> dict[str, Any]:
    """Drive the guest through what a lesson does; return everything observable."""
    wait_settled(machine)
    dev = machine.devices["vm0"]
    work = Workload(machine)
    seen: dict[str, Any] = {"addr": dev.addr, "booted_with": dev.plugged_runs()}
    alloc = work.alloc(8 * MiB, target="vm0")
    seen["verify"] = work.verify(alloc)
    unplugged = dev.addr + 200 * MiB
    read = work.read(unplugged + 0x18)
    seen["read_unplugged"] = (read.status, read.values)
    rogue = work.rogue_write(dev.addr + 300 * MiB)
    seen["rogue_write"] = (rogue.status, rogue.values)
    seen["dump"] = work.dump("vm0")
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
        machine = make_machine()
        assert machine.board.stage2.kind == fill
        assert machine.board.uc.ctl_get_page_size() == stage2.TLB_PAGE_SIZE == 4096
        stories[fill] = _story(machine)
        machine.close()
    native, python = stories["native"], stories["python"]
    assert native == python
    # and it is the right story, not the same wrong one twice
    assert native["read_unplugged"][0] == 0
    assert native["rogue_write"][0] == -abi.EFAULT
    assert native["verify"] == native["verify_after"] == (0, 8 * MiB // 4096)
    assert [(d, a, acc, why) for d, a, _pc, acc, why in native["violations"]] == [
        ("vm0", native["addr"] + 300 * MiB, "write", "write to unplugged block")]
    assert ("vm0", 100) in native["zero_read_blocks"]  # the read at +200 MiB, 2 MiB blocks
    assert native["runstate"] == "running" and native["faults"] == 1


@pytest.mark.parametrize("fill", FILLS)
def test_unplugged_inaccessible_under_each_fill(
        fill: str, make_machine: MachineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy byte follows feature negotiation: reads of unplugged blocks are refused."""
    _use_fill(monkeypatch, fill)
    cfg = small_config(devices=[MemoryDeviceConfig(
        id="vm0", size=512 * MiB, requested_size=128 * MiB, unplugged_inaccessible=True)])
    machine = make_machine(cfg)
    wait_settled(machine)
    assert machine.board.stage2.kind == fill
    dev = machine.devices["vm0"]
    seq = machine.bus.last_seq
    result = Workload(machine).read(dev.addr + 200 * MiB)
    assert result.status == -abi.EFAULT
    violations = [r.event for r in machine.bus.since(seq) if isinstance(r.event, Violation)]
    assert [(v.device, v.access) for v in violations] == [("vm0", "read")]
    assert "UNPLUGGED_INACCESSIBLE" in violations[0].reason
    read, _nonzero = Workload(machine).dump("vm0")
    assert read == 128 * MiB  # the driver asks for block states and skips unplugged blocks


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
