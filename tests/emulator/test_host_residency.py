"""The host really frees unplugged memory (madvise), and mincore shows it."""

from __future__ import annotations

from emulator import MachineConfig, MemoryDeviceConfig
from emulator.config import MiB
from emulator.workload import Workload
from tests.conftest import MachineFactory, wait_settled


def test_unplugging_touched_memory_lowers_residency_by_that_amount(
        make_machine: MachineFactory) -> None:
    cfg = MachineConfig(boot_ram=256 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", size=512 * MiB, requested_size=256 * MiB)])
    machine = make_machine(cfg)
    wait_settled(machine)
    region = machine.regions["vm0"]
    work = Workload(machine)
    data = work.alloc(64 * MiB, target="vm0")  # movable, written page by page
    touched = region.resident_bytes()
    assert touched >= 64 * MiB
    machine.set_requested_size("vm0", 0)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 0
    assert region.resident_bytes() == 0  # every touched page went back to the host
    snap = machine.snapshot()
    assert snap.guest is not None and snap.guest.devices[0] is not None
    assert snap.guest.devices[0].migrated_pages == 64 * MiB // 4096
    assert work.verify(data) == (0, data.pages)  # the data moved to boot RAM intact


def test_snapshot_residency_is_zero_for_unplugged_blocks(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    Workload(machine).alloc(16 * MiB, target="vm0")
    dev = machine.snapshot(residency=True).device("vm0")
    assert dev.resident is not None
    for plugged, resident in zip(dev.bitmap, dev.resident, strict=True):
        if not plugged:
            assert resident == 0
    assert sum(dev.resident) >= 16 * MiB


def test_replugged_block_reads_zeros(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    work = Workload(machine)
    alloc = work.alloc(100 * MiB, target="vm0")
    work.free(alloc)
    machine.set_requested_size("vm0", 0)
    wait_settled(machine)
    machine.set_requested_size("vm0", 128 * MiB)
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert machine.read_memory(dev.addr, 64 * MiB) == bytes(64 * MiB)
