"""System reset as QEMU does it: everything unplugged at once, the rebooted guest plugs again."""

from __future__ import annotations

from device.events import BlockStateChange, VirtioRequest
from emulator.config import DEFAULT_GUEST_CMDLINE, MiB
from emulator.events import GuestStatus, Reset
from emulator.workload import Workload
from tests.conftest import MachineFactory, wait_settled

NO_DRIVER = "modprobe.blacklist=virtio_mem"


def test_system_reset_unplugs_all_then_guest_replugs(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    region = machine.regions["vm0"]
    Workload(machine).alloc(32 * MiB, target="vm0")
    seq = machine.bus.last_seq
    machine.system_reset()
    events = machine.bus.since(seq)
    kinds = [r.event.kind for r in events]
    # the size drops to zero before the RESET event (QEMU's order)
    reset_at = kinds.index("reset")
    unplug = [r.event for r in events[:reset_at] if isinstance(r.event, BlockStateChange)]
    assert unplug and not any(e.plugged for e in unplug)
    reset = events[reset_at].event
    assert isinstance(reset, Reset) and (reset.guest, reset.reason) == (
        False, "host-qmp-system-reset")
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert dev.plugged_size == dev.requested_size == 128 * MiB
    assert region.resident_bytes() == 0  # the old contents were discarded, nothing refilled


def test_requested_size_changed_during_reboot_is_honoured(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    machine.pause()
    machine.system_reset()
    machine.set_requested_size("vm0", 192 * MiB)
    machine.resume()
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 192 * MiB


def test_guest_initiated_reboot(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    seq = machine.bus.last_seq
    Workload(machine).reboot()
    assert machine.wait_until(
        lambda m: any(isinstance(r.event, Reset) for r in m.bus.since(seq)), 10)
    reset = next(r.event for r in machine.bus.since(seq) if isinstance(r.event, Reset))
    assert (reset.guest, reset.reason) == (True, "guest-reset")
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 128 * MiB


def test_reboot_into_guest_without_driver_uses_boot_ram_only(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    machine.system_reset(cmdline=NO_DRIVER)
    seq_after_reset = machine.bus.last_seq
    wait_settled(machine)
    assert machine.guest_states["vm0"] == "disabled"
    work = Workload(machine)
    data = work.alloc(16 * MiB)  # "any" target: only boot RAM exists for this guest
    assert work.verify(data) == (0, data.pages)
    dev = machine.devices["vm0"]
    assert dev.plugged_size == 0 and dev.bitmap.count(1) == 0
    assert machine.regions["vm0"].resident_bytes() == 0
    events = machine.bus.since(seq_after_reset)
    assert not [r for r in events if r.event.kind in
                ("request", "zero_page_read", "violation", "block_state")]
    # and back to the normal guest: it plugs again
    machine.system_reset(cmdline=DEFAULT_GUEST_CMDLINE)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 128 * MiB


def test_guest_started_without_driver_boots(make_machine: MachineFactory) -> None:
    from tests.conftest import small_config

    machine = make_machine(small_config(cmdline=NO_DRIVER))
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "disabled", 10)
    statuses = [r.event for r in machine.bus.since(0) if isinstance(r.event, GuestStatus)]
    assert statuses[0].status == "booted" and statuses[0].detail == 0


def test_rfc_shrink_on_reboot_with_a_guest_that_adopts_its_memory(
        make_machine: MachineFactory) -> None:
    """The 2017 RFC's reboot: the device keeps the plugged memory compacted at the start of a
    shrunk area, and a guest booted with virtio_mem.adopt=1 keeps it (STATE requests only)."""
    from tests.conftest import small_config

    machine = make_machine(small_config(rfc_shrink_on_reboot=True,
                                        cmdline=f"{DEFAULT_GUEST_CMDLINE} virtio_mem.adopt=1"))
    wait_settled(machine)
    machine.set_requested_size("vm0", 64 * MiB)
    wait_settled(machine)
    plugged = machine.devices["vm0"].plugged_size
    seq = machine.bus.last_seq
    machine.system_reset()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert dev.plugged_size == plugged
    assert dev.usable_region_size >= plugged
    assert dev.bitmap[: plugged // dev.block_size] == b"\x01" * (plugged // dev.block_size)
    requests = {r.event.type for r in machine.bus.since(seq)
                if isinstance(r.event, VirtioRequest)}
    assert requests == {"STATE"}  # no UNPLUG_ALL, no PLUG: the guest adopted what it found
    assert any("adopted 0x4000000" in line for line in machine.console)


def test_rfc_device_with_a_linux_like_guest_unplugs_all_at_probe(
        make_machine: MachineFactory) -> None:
    from tests.conftest import small_config

    machine = make_machine(small_config(rfc_shrink_on_reboot=True))
    wait_settled(machine)
    seq = machine.bus.last_seq
    machine.system_reset()
    wait_settled(machine)
    types = [r.event.type for r in machine.bus.since(seq) if isinstance(r.event, VirtioRequest)]
    assert types[0] == "UNPLUG_ALL" and "PLUG" in types
    assert machine.devices["vm0"].plugged_size == 128 * MiB
