"""Who guarantees what about unplugged memory: shipped QEMU, dynamic-memslots, the RFC.

Each test runs the real guest and measures the host: which pages hold host memory (pagemap),
what the guest reads back, which events and faults were recorded. Every docstring quotes the
source line the behaviour follows.
"""

from __future__ import annotations

from device.events import VirtioRequest
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.abi import EFAULT
from emulator.config import MiB
from emulator.events import UnpluggedWrite, Violation, ZeroPageRead
from emulator.workload import Workload
from tests.conftest import MachineFactory, small_config, wait_settled

ROGUE = 0xDEAD_BEEF_DEAD_BEEF  # what the guest's rogue write stores
PAGE = 4096


def _device(**options: object) -> MachineConfig:
    return small_config(devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=2048 * MiB, requested_size=128 * MiB,
        **options)])  # type: ignore[arg-type]


def _page_resident(machine: Machine, addr: int) -> bool:
    region = machine.regions["vm0"]
    return region.resident_bytes((addr - region.gpa) & ~(PAGE - 1), PAGE) == PAGE


def _events(machine: Machine, seq: int, kind: type) -> list:
    return [r.event for r in machine.bus.since(seq) if isinstance(r.event, kind)]


# ------------------------------------------------------------------ shipped QEMU (the default)


def test_reading_unplugged_memory_returns_zeros_without_host_memory(
        make_machine: MachineFactory) -> None:
    """virtio spec: without UNPLUGGED_INACCESSIBLE the device "MUST allow CPU reads of
    unplugged blocks inside the usable region"; QEMU maps the whole memdev ("With
    "dynamic-memslots=off" (old behavior) we always map the whole RAM memory region
    directly"), so a read sees the host's anonymous memory: the kernel's shared zero page."""
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
    reads = _events(machine, seq, ZeroPageRead)
    assert reads and reads[0].device == "vm0"
    assert reads[0].first_block == 200 * MiB // dev.block_size
    assert not _events(machine, seq, Violation)


def test_unplugged_inaccessible_does_not_refuse_reads(make_machine: MachineFactory) -> None:
    """The feature binds the *driver* ("The driver is not allowed to access unplugged
    memory"); QEMU only offers it (``virtio_mem_get_features``: ``if
    (vmem->unplugged_inaccessible == ON_OFF_AUTO_ON) virtio_add_feature(&features,
    VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);``) and checks that it was accepted. Nothing injects
    an abort: on arm ``virt`` (always on: ``vmem->unplugged_inaccessible = ON_OFF_AUTO_ON``)
    a read of unplugged memory simply returns zeros."""
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert dev.unplugged_inaccessible_negotiated
    seq = machine.bus.last_seq
    result = Workload(machine).read(dev.addr + 200 * MiB)
    assert result.ok and result.values[0] == 0
    assert not _events(machine, seq, Violation)
    assert machine.guest_faults == 0


def test_shipped_qemu_rogue_write_goes_through_and_the_host_backs_it_again(
        make_machine: MachineFactory) -> None:
    """Shipped QEMU protects nothing: ``virtio_mem_set_block_state`` only discards on
    unplug (``ram_block_discard_range(rb, offset, size)``), the region stays mapped, and the
    spec lets the device "MAY modify memory of unplugged blocks" -- there is no guarantee
    (QEMU's user guide: limit the VM with cgroups). The write succeeds, the host has to back
    that page again (pagemap: present and exclusive) and the guest reads its data back."""
    machine = make_machine(_device())
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    target = dev.addr + 300 * MiB
    resident_before = region.resident_bytes()
    assert not _page_resident(machine, target)
    seq = machine.bus.last_seq
    result = Workload(machine).rogue_write(target)
    assert result.status == 0 and result.values == (target, ROGUE)
    assert region.resident_bytes() == resident_before + PAGE
    assert _page_resident(machine, target)
    assert machine.read_memory(target, 8) == ROGUE.to_bytes(8, "little")  # QEMU's xp
    assert Workload(machine).read(target).values[0] == ROGUE
    writes = _events(machine, seq, UnpluggedWrite)
    assert [(w.device, w.first_block, w.count) for w in writes] == [("vm0", 150, 1)]
    assert not _events(machine, seq, Violation)
    snap = machine.snapshot(residency=True)
    assert snap.device("vm0").unplugged_resident == PAGE  # "unplugged but resident"
    assert snap.device("vm0").unplugged_policy == "shipped"
    assert snap.device("vm0").written_unplugged[150] == 1
    assert machine.guest_faults == 0 and machine.runstate == "running"


def test_the_rogue_data_stays_until_a_discard_frees_it(make_machine: MachineFactory) -> None:
    """Plugging populates nothing (``virtio_mem_set_block_state`` with ``plug``: no discard
    unless prealloc or a notifier fails), so the rogue data is still there; UNPLUG_ALL on a
    reset discards the whole RAM block (``ram_block_discard_range(rb, 0,
    qemu_ram_get_used_length(rb))``) and the page is freed: it reads as zeros again."""
    machine = make_machine(_device())
    wait_settled(machine)
    dev = machine.devices["vm0"]
    target = dev.addr + 200 * MiB
    assert Workload(machine).rogue_write(target).status == 0
    machine.set_requested_size("vm0", 256 * MiB)  # plugs block 100 too
    wait_settled(machine)
    assert dev.bitmap[100]
    assert _page_resident(machine, target)
    assert machine.read_memory(target, 8) == ROGUE.to_bytes(8, "little")  # still there
    machine.system_reset()
    wait_settled(machine)
    assert not _page_resident(machine, target)
    assert machine.read_memory(target, 8) == bytes(8)
    assert machine.snapshot(residency=True).device("vm0").unplugged_resident == 0


def test_rogue_write_default_target_is_first_unplugged_block(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    dev = machine.devices["vm0"]
    result = Workload(machine).rogue_write(0, "vm0")
    assert result.status == 0
    assert result.values[0] == dev.addr + dev.plugged_size  # block 64


# ------------------------------------------------------------------ x-rfc-write-protect


def test_rfc_write_protect_refuses_the_write_and_changes_nothing(
        make_machine: MachineFactory) -> None:
    """The 2017 RFC's design, as the named option ``x-rfc-write-protect=on``: "unplugged
    memory" is protected by the host (the RFC: mprotect, later userfaultfd-wp). The store is
    refused before it reaches host memory, recorded as a violation, and the guest gets a
    permission fault it survives."""
    machine = make_machine(_device(rfc_write_protect=True))
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    seq = machine.bus.last_seq
    target = dev.addr + 300 * MiB
    result = Workload(machine).rogue_write(target)
    assert result.status == -EFAULT
    assert result.values[0] == target
    violations = _events(machine, seq, Violation)
    assert len(violations) == 1
    v = violations[0]
    assert (v.device, v.addr, v.access) == ("vm0", target, "write")
    assert "x-rfc-write-protect" in v.reason
    assert 0x40080000 <= v.pc < 0x40100000  # the guest's store instruction
    assert machine.read_memory(target, 8) == bytes(8)
    assert region.read(target - dev.addr, 8) == bytes(8)
    assert region.resident_bytes() == resident_before
    assert not _events(machine, seq, UnpluggedWrite)
    # the guest recovered and keeps working
    assert machine.runstate == "running"
    snap = machine.snapshot()
    assert snap.guest is not None and snap.guest.faults == 1
    assert snap.guest.last_fault_addr == target
    assert snap.device("vm0").unplugged_policy == "x-rfc-write-protect"
    machine.set_requested_size("vm0", 64 * MiB)
    wait_settled(machine)


def test_the_guest_sees_the_abort_a_cpu_would_report(make_machine: MachineFactory) -> None:
    """Data abort, current EL, write, permission fault level 3: ESR 0x9600004f; FAR = address."""
    machine = make_machine(_device(rfc_write_protect=True))
    wait_settled(machine)
    target = machine.devices["vm0"].addr + 300 * MiB
    assert Workload(machine).rogue_write(target).status == -EFAULT
    assert any(f"ESR 0x9600004f, FAR 0x{target:x}" in line for line in machine.console)
    result = Workload(machine).read(0x7_0000_0000)  # nothing there: a translation fault
    assert result.status == -EFAULT
    assert machine.guest_faults == 2


# ------------------------------------------------------------------ dynamic-memslots


def test_dynamic_memslots_map_only_memslots_with_something_plugged(
        make_machine: MachineFactory) -> None:
    """QEMU 8.2 ``virtio_mem_decide_memslots``: memslots of ``MAX(block size,
    VIRTIO_MEM_MIN_MEMSLOT_SIZE)`` (1 GiB) here; ``virtio_mem_activate_memslots_to_plug``
    maps one before a block in it is plugged, ``virtio_mem_deactivate_unplugged_memslots``
    unmaps it once "completely unplugged" ("Partially covered memslots might still have some
    blocks plugged and have to remain active")."""
    machine = make_machine(_device(dynamic_memslots=True))
    wait_settled(machine)
    dev = machine.devices["vm0"]
    assert dev.memslot_size == 1024 * MiB and bytes(dev.memslots) == b"\x01\x00"
    machine.set_requested_size("vm0", 1100 * MiB)  # the last 76 MiB land in memslot 1
    wait_settled(machine)
    assert bytes(dev.memslots) == b"\x01\x01"
    machine.set_requested_size("vm0", 128 * MiB)
    wait_settled(machine)
    assert bytes(dev.memslots) == b"\x01\x00"
    assert machine.snapshot().device("vm0").memslots == b"\x01\x00"


def test_dynamic_memslots_unplugged_block_in_a_mapped_memslot_is_still_writable(
        make_machine: MachineFactory) -> None:
    """A mapped memslot is an alias of the whole memslot's RAM (``memory_region_init_alias(
    &vmem->memslots[idx], ..., &vmem->memdev->mr, memslot_offset, memslot_size)``): its
    unplugged blocks behave as in shipped QEMU -- the write goes through."""
    machine = make_machine(_device(dynamic_memslots=True))
    wait_settled(machine)
    dev = machine.devices["vm0"]
    target = dev.addr + 300 * MiB  # memslot 0, which holds the plugged 128 MiB
    result = Workload(machine).rogue_write(target)
    assert result.status == 0 and result.values[1] == ROGUE
    assert _page_resident(machine, target)


def test_dynamic_memslots_on_arm_an_access_with_no_memslot_is_an_external_abort(
        make_machine: MachineFactory) -> None:
    """Nothing is mapped in an unmapped memslot, so the access ends in ``unassigned_mem_ops``
    (``unassigned_mem_accepts`` returns false: ``MEMTX_DECODE_ERROR``) and TCG on arm calls
    ``arm_cpu_do_transaction_failed``: ``fi.type = ARMFault_SyncExternal`` -- a synchronous
    external abort (DFSC 0x10; EA = 0 for a decode error). Reads fault too; nothing reaches
    host memory."""
    machine = make_machine(_device(dynamic_memslots=True))
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    target = dev.addr + 1536 * MiB  # memslot 1: nothing plugged
    seq = machine.bus.last_seq
    assert Workload(machine).rogue_write(target).status == -EFAULT
    assert Workload(machine).read(target).status == -EFAULT
    assert any(f"rogue write to 0x{target:x} blocked (ESR 0x96000050, FAR 0x{target:x})"
               in line for line in machine.console)
    assert any(f"read from 0x{target:x} blocked (ESR 0x96000010, FAR 0x{target:x})"
               in line for line in machine.console)
    violations = _events(machine, seq, Violation)
    assert [(v.access, v.addr) for v in violations] == [("write", target), ("read", target)]
    assert all("memslot" in v.reason for v in violations)
    assert region.resident_bytes() == resident_before
    assert machine.runstate == "running" and machine.guest_faults == 2


def test_dynamic_memslots_on_x86_reads_give_zero_and_writes_are_dropped(
        make_machine: MachineFactory) -> None:
    """On a PC (``-machine q35``) the same access has no transaction-failed hook:
    ``unassigned_mem_read`` "return 0;", ``unassigned_mem_write`` does nothing. The store
    completes without effect (no guest fault), it reads back 0 and no host memory is used.
    x86 needs ``unplugged-inaccessible=on`` for it ("'%s' property set to 'on' requires '%s'
    to be 'on'")."""
    cfg = _device(dynamic_memslots=True, unplugged_inaccessible="on")
    cfg.machine = "q35"
    machine = make_machine(cfg)
    wait_settled(machine)
    dev = machine.devices["vm0"]
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    target = dev.addr + 1536 * MiB
    seq = machine.bus.last_seq
    result = Workload(machine).rogue_write(target)
    assert result.status == 0 and result.values == (target, 0)  # stored, reads back 0
    assert machine.guest_faults == 0 and machine.runstate == "running"
    violations = _events(machine, seq, Violation)
    assert [(v.access, v.addr) for v in violations] == [("write", target)]
    assert "dropped" in violations[0].reason
    assert region.resident_bytes() == resident_before
    assert not _events(machine, seq, UnpluggedWrite)


# ------------------------------------------------------------------ kdump


def _partly_plugged(make_machine: MachineFactory) -> tuple[Machine, Workload]:
    """100 MiB plugged: one 128 MiB memory block added, 14 of its 64 device blocks unplugged;
    the unplugged subblocks hold the data of a rogue write."""
    cfg = small_config(devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=512 * MiB, requested_size=100 * MiB)])
    machine = make_machine(cfg)
    wait_settled(machine)
    work = Workload(machine)
    work.alloc(8 * MiB, target="vm0")
    dev = machine.devices["vm0"]
    assert dev.plugged_size == 100 * MiB
    assert work.rogue_write(dev.addr + 110 * MiB).status == 0  # unplugged, inside block 0
    return machine, work


def test_kdump_asks_the_device_and_reads_only_plugged_blocks(
        make_machine: MachineFactory) -> None:
    """Linux >= 5.16 ``virtio_mem_vmcore_pfn_is_ram``, whatever the features: ``if
    (!vm->plugged_size) return false;``, then ``rc = virtio_mem_send_state_request(vm, addr,
    vm->device_block_size);`` per device block, and "On any kind of error, we're going to
    signal !ram." Only plugged blocks are read: 100 MiB of the 128 MiB memory block, one STATE
    request per device block, and not a byte of the rogue page."""
    machine, work = _partly_plugged(make_machine)
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    seq = machine.bus.last_seq
    read, nonzero = work.dump("vm0")
    assert read == 100 * MiB
    assert nonzero == 8 * MiB // PAGE  # the allocation; the rogue page is not read
    states = [e for e in _events(machine, seq, VirtioRequest) if e.type == "STATE"]
    assert len(states) == 64  # one per device block of the added memory block
    assert not _events(machine, seq, Violation)
    assert region.resident_bytes() == resident_before


def test_legacy_kdump_reads_every_page_of_the_added_memory(
        make_machine: MachineFactory) -> None:
    """The RFC's / a pre-5.16 kdump ("Unplugged memory can be read. This allows e.g.
    kexec()"): /proc/vmcore covers every page of the memory the crashed kernel added,
    unplugged subblocks included -- what UNPLUGGED_INACCESSIBLE forbids a driver. Shipped QEMU
    lets it: the reads see zero pages (no host memory) and the rogue page's data."""
    machine, work = _partly_plugged(make_machine)
    region = machine.regions["vm0"]
    resident_before = region.resident_bytes()
    seq = machine.bus.last_seq
    read, nonzero = work.dump("vm0", legacy=True)
    assert read == 128 * MiB
    assert nonzero == 8 * MiB // PAGE + 1  # the allocation and the rogue page
    assert not [e for e in _events(machine, seq, VirtioRequest) if e.type == "STATE"]
    assert _events(machine, seq, ZeroPageRead)
    assert not _events(machine, seq, Violation)
    assert region.resident_bytes() == resident_before
    assert any("kdump (legacy" in line for line in machine.console)


def test_migration_does_not_carry_what_a_rogue_write_left(make_machine: MachineFactory) -> None:
    """QEMU's RAM migration skips discarded (unplugged) ranges, and the destination's
    ``virtio_mem_post_load`` ends in ``virtio_mem_restore_unplugged``: "Make sure all memory is
    really discarded after migration." The rogue page stays behind."""
    from control import control_for

    source = make_machine()
    wait_settled(source)
    target = source.devices["vm0"].addr + 300 * MiB
    assert Workload(source).rogue_write(target).status == 0
    dest = control_for(source).migrate()
    try:
        wait_settled(dest)
        assert not _page_resident(dest, target)
        assert dest.read_memory(target, 8) == bytes(8)
        assert dest.snapshot(residency=True).device("vm0").unplugged_resident == 0
    finally:
        dest.close()
