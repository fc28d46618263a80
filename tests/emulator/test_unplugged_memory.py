"""Unplugged memory: reads see the zero page for free, writes never reach the host."""

from __future__ import annotations

from device.events import VirtioRequest
from emulator import MachineConfig, MemoryDeviceConfig
from emulator.abi import EFAULT
from emulator.config import MiB
from emulator.events import Violation, ZeroPageRead
from emulator.workload import Workload
from tests.conftest import MachineFactory, small_config, wait_settled


def test_reading_unplugged_memory_returns_zeros_without_host_memory(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    seq = machine.bus.last_seq
    unplugged = dev.addr + 200 * MiB  # inside the usable region, not plugged
    assert not dev.bitmap[200 * MiB // dev.block_size]
    result = Workload(machine).read(unplugged + 0x18)
    assert result.ok and result.values == (0, unplugged + 0x18)
    assert region.resident_bytes() == resident_before
    reads = [r.event for r in machine.bus.since(seq) if isinstance(r.event, ZeroPageRead)]
    assert reads and reads[0].device == "vm0"
    assert reads[0].first_block == 200 * MiB // dev.block_size
    assert not [r for r in machine.bus.since(seq) if isinstance(r.event, Violation)]


def test_kdump_style_dump_reads_zero_pages_without_populating_host(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    work = Workload(machine)
    work.alloc(8 * MiB, target="vm0")
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    dev = machine.devices["vm0"]
    read, nonzero = work.dump("vm0")
    assert read == dev.usable_region_size  # every page of the usable region
    assert nonzero == 8 * MiB // 4096  # only the allocation holds data
    assert region.resident_bytes() == resident_before


def test_rogue_write_is_blocked_recorded_and_changes_nothing(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    seq = machine.bus.last_seq
    target = dev.addr + 300 * MiB
    result = Workload(machine).rogue_write(target)
    assert result.status == -EFAULT
    assert result.values[0] == target
    violations = [r.event for r in machine.bus.since(seq) if isinstance(r.event, Violation)]
    assert len(violations) == 1
    v = violations[0]
    assert (v.device, v.addr, v.access) == ("vm0", target, "write")
    assert 0x40080000 <= v.pc < 0x40100000  # the guest's store instruction
    assert machine.read_memory(target, 8) == bytes(8)
    assert region.read(target - dev.addr, 8) == bytes(8)
    assert region.resident_bytes() == resident_before
    # the guest recovered and keeps working
    assert machine.runstate == "running"
    snap = machine.snapshot()
    assert snap.guest is not None and snap.guest.faults == 1
    assert snap.guest.last_fault_addr == target
    machine.set_requested_size("vm0", 64 * MiB)
    wait_settled(machine)


def test_rogue_write_default_target_is_first_unplugged_block(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    result = Workload(machine).rogue_write(0, "vm0")
    assert result.status == -EFAULT
    assert result.values[0] == dev.addr + dev.plugged_size  # block 64


def test_unplugged_inaccessible_refuses_even_reads(make_machine: MachineFactory) -> None:
    cfg = small_config(devices=[MemoryDeviceConfig(
        id="vm0", size=512 * MiB, requested_size=128 * MiB, unplugged_inaccessible=True)])
    machine = make_machine(cfg)
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert dev.unplugged_inaccessible_negotiated
    seq = machine.bus.last_seq
    target = dev.addr + 200 * MiB
    result = Workload(machine).read(target)
    assert result.status == -EFAULT
    violations = [r.event for r in machine.bus.since(seq) if isinstance(r.event, Violation)]
    assert [(v.addr, v.access) for v in violations] == [(target, "read")]
    assert "UNPLUGGED_INACCESSIBLE" in violations[0].reason


def test_dump_with_unplugged_inaccessible_uses_state_requests(
        make_machine: MachineFactory) -> None:
    cfg = MachineConfig(boot_ram=64 * MiB, devices=[MemoryDeviceConfig(
        id="vm0", size=512 * MiB, requested_size=128 * MiB, unplugged_inaccessible=True)])
    machine = make_machine(cfg)
    wait_settled(machine)
    seq = machine.bus.last_seq
    read, _nonzero = Workload(machine).dump("vm0")
    assert read == 128 * MiB  # only plugged blocks are read
    events = machine.bus.since(seq)
    states = [r.event for r in events
              if isinstance(r.event, VirtioRequest) and r.event.type == "STATE"]
    assert len(states) >= 1
    assert not [r for r in events if isinstance(r.event, Violation)]


def test_the_guest_sees_the_abort_a_cpu_would_report(make_machine: MachineFactory) -> None:
    """Data abort, current EL, write, permission fault level 3: ESR 0x9600004f; FAR = address."""
    machine = make_machine()
    wait_settled(machine)
    target = machine.devices["vm0"].addr + 300 * MiB
    assert Workload(machine).rogue_write(target).status == -EFAULT
    assert any(f"ESR 0x9600004f, FAR 0x{target:x}" in line for line in machine.console)
    result = Workload(machine).read(0x7_0000_0000)  # nothing there: a translation fault
    assert result.status == -EFAULT
    assert machine.guest_faults == 2
