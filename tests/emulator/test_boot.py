"""The machine boots the real guest image and its driver plugs to requested_size."""

from __future__ import annotations

from device.events import VirtioRequest
from emulator import MachineConfig, MemoryDeviceConfig
from emulator.config import MiB
from emulator.events import ConsoleOutput, GuestStatus
from tests.conftest import MachineFactory, wait_settled


def test_guest_boots_and_plugs_requested_size(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    snap = machine.snapshot()
    dev = snap.device("vm0")
    assert dev.plugged_size == dev.requested_size == 128 * MiB
    assert dev.plugged_blocks * dev.block_size == dev.plugged_size
    # lowest address first: the plugged blocks are exactly the first 64
    assert dev.bitmap[:64] == b"\x01" * 64 and dev.bitmap.count(1) == 64
    assert snap.guest is not None
    gdev = snap.guest.devices[0]
    assert gdev is not None
    assert gdev.plugged_size == dev.plugged_size  # the driver's own count agrees
    assert gdev.state == "idle"
    assert [u[3] for u in gdev.usage].count(1) == 64
    lines = [r.event.line for r in machine.bus.since(0) if isinstance(r.event, ConsoleOutput)]
    assert any("virtio_mem virtio0: requested size: 0x8000000" in line for line in lines)


def test_guest_reports_driver_states_through_events(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    statuses = [r.event.status for r in machine.bus.since(0)
                if isinstance(r.event, GuestStatus)]
    assert statuses[0] == "booted"
    assert "idle" in statuses


def test_plug_requests_are_coalesced_per_memory_block(make_machine: MachineFactory) -> None:
    """Like Linux: one PLUG per 128 MiB memory block (nb_blocks=64 at 2 MiB), ascending."""
    cfg = MachineConfig(boot_ram=64 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", size=1024 * MiB, requested_size=512 * MiB)])
    machine = make_machine(cfg)
    wait_settled(machine)
    plugs = [r.event for r in machine.bus.since(0)
             if isinstance(r.event, VirtioRequest) and r.event.type == "PLUG"]
    base = machine.devices["vm0"].addr
    assert [(p.addr - base, p.nb_blocks) for p in plugs] == [
        (i * 128 * MiB, 64) for i in range(4)]


def test_two_devices_on_two_nodes(make_machine: MachineFactory) -> None:
    from emulator import NumaNodeConfig

    cfg = MachineConfig(
        boot_ram=128 * MiB,
        nodes=[NumaNodeConfig(0, [0]), NumaNodeConfig(1, [1])],
        devices=[
            MemoryDeviceConfig(id="vm0", size=512 * MiB, node=0, requested_size=256 * MiB),
            MemoryDeviceConfig(id="vm1", size=512 * MiB, node=1, requested_size=64 * MiB),
        ],
    )
    machine = make_machine(cfg)
    wait_settled(machine)
    snap = machine.snapshot()
    assert [(n.node_id, n.boot_ram, n.plugged) for n in snap.nodes] == [
        (0, 64 * MiB, 256 * MiB), (1, 64 * MiB, 64 * MiB)]
