"""Which QEMU the machine follows: arm ``virt`` (the default) or x86 ``pc``/``q35``.

Each test names the QEMU 7.2 source line the rule comes from (hw/virtio/virtio-mem.c,
hw/i386/pc*.c, hw/arm/virt.c, hw/mem/memory-device.c of QEMU 8.2 for dynamic memslots).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from device import virtio_mem_protocol as proto
from device.errors import ConfigError
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.config import GiB, MiB, decide_memslots, memslot_limit
from emulator.machine_types import PC, Q35, VIRT, Personality, personality
from emulator.snapshot import machine_state
from tests.conftest import MachineFactory, wait_settled


def _config(machine: str, boot_ram: int = 256 * MiB, **device: Any) -> MachineConfig:
    return MachineConfig(boot_ram=boot_ram, machine=machine, devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=2 * GiB, requested_size=128 * MiB,
        **device)])


@pytest.mark.parametrize(("machine", "extent"), [("virt", 2 * 512 * MiB),
                                                 ("pc", 2 * 128 * MiB),
                                                 ("q35", 2 * 128 * MiB)])
def test_the_usable_region_extent_follows_the_target(
        machine: str, extent: int, make_machine: MachineFactory) -> None:
    """hw/virtio/virtio-mem.c: ``#if defined(TARGET_X86_64) || defined(TARGET_I386)``
    ``#define VIRTIO_MEM_USABLE_EXTENT (2 * (128 * MiB))`` ``#elif defined(TARGET_ARM)``
    ``#define VIRTIO_MEM_USABLE_EXTENT (2 * (512 * MiB))``; ``virtio_mem_resize_usable_region``:
    ``MIN(memory_region_size(&vmem->memdev->mr), requested_size + VIRTIO_MEM_USABLE_EXTENT)``."""
    m = make_machine(_config(machine), start=False)
    dev = m.devices["vm0"]
    assert dev.usable_region_size == 128 * MiB + extent
    assert m.layout.machine.usable_extent == extent
    m.start()
    wait_settled(m)
    assert dev.plugged_size == 128 * MiB
    assert dev.usable_region_size == 128 * MiB + extent


def test_arm_virt_has_no_unplugged_inaccessible_property(make_machine: MachineFactory) -> None:
    """``#if defined(VIRTIO_MEM_HAS_LEGACY_GUESTS)`` (only ``TARGET_X86_64 || TARGET_I386``)
    ``DEFINE_PROP_ON_OFF_AUTO(VIRTIO_MEM_UNPLUGGED_INACCESSIBLE_PROP, ...)``, else realize
    sets ``vmem->unplugged_inaccessible = ON_OFF_AUTO_ON``: always offered, never off."""
    m = make_machine(_config("virt"))
    wait_settled(m)
    dev = m.devices["vm0"]
    assert dev.device_features >> proto.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE & 1
    assert dev.unplugged_inaccessible_negotiated  # the guest, like Linux >= 5.16, accepts it
    with pytest.raises(ConfigError, match="only on x86"):
        _config("virt", unplugged_inaccessible="off").layout()
    assert _config("virt", unplugged_inaccessible=True).layout().devices[0] \
        .unplugged_inaccessible


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_x86_unplugged_inaccessible_defaults_to_auto(machine: str) -> None:
    """QEMU 7.2 x86 machine types: the property defaults to ``ON_OFF_AUTO_AUTO`` (QEMU 8.1
    changed it to "on" and added ``pc_compat_8_0`` = "auto"); realize: ``case
    ON_OFF_AUTO_AUTO: if (virtio_mem_has_shared_zeropage(rb)) vmem->unplugged_inaccessible =
    ON_OFF_AUTO_OFF; else ... ON_OFF_AUTO_ON``, where only private anonymous RAM has the shared
    zero page (``!qemu_ram_is_shared(rb) && qemu_ram_get_fd(rb) < 0``). Transcript 06:
    memory-backend-ram gives "off", memory-backend-memfd,share=on gives "on"."""
    def offered(**device: Any) -> bool:
        return _config(machine, **device).layout().devices[0].unplugged_inaccessible

    assert personality(machine).unplugged_inaccessible_default == "auto"
    assert offered() is False  # memory-backend-ram
    assert offered(shared_zeropage=False) is True  # memfd / file / share=on
    assert offered(unplugged_inaccessible="on") is True
    assert offered(unplugged_inaccessible="off", shared_zeropage=False) is False
    assert offered(unplugged_inaccessible="auto") is False
    with pytest.raises(ConfigError, match="does not accept value 'maybe'"):
        offered(unplugged_inaccessible="maybe")


def test_dynamic_memslots_need_unplugged_inaccessible() -> None:
    """virtio_mem_device_realize: ``if (vmem->dynamic_memslots && vmem->unplugged_inaccessible
    != ON_OFF_AUTO_ON) error_setg(errp, "'%s' property set to 'on' requires '%s' to be 'on'",
    ...)`` -- on arm it always is."""
    with pytest.raises(ConfigError, match="'dynamic-memslots' property set to 'on' requires "
                                          "'unplugged-inaccessible' to be 'on'"):
        _config("q35", dynamic_memslots=True).layout()
    assert _config("q35", dynamic_memslots=True, unplugged_inaccessible="on").layout()
    assert _config("virt", dynamic_memslots=True).layout()


@pytest.mark.parametrize(("machine", "boot_ram", "base"), [
    ("virt", 1 * GiB, 0x8000_0000),  # RAM at 1 GiB + 1 GiB, rounded up to 1 GiB
    ("virt", 1536 * MiB, 0xC000_0000),
    ("q35", 1 * GiB, 0x1_0000_0000),  # transcript 01: memaddr 0x100000000
    ("q35", 3 * GiB, 0x1_4000_0000),  # >= 0xb0000000: lowmem 2G, 1G above 4G
    ("pc", 1 * GiB, 0x1_0000_0000),
    ("pc", 4 * GiB, 0x1_4000_0000),  # the RFC's: "-M pc -m 4G -> 3072M low, 1024M high"
])
def test_the_device_area_is_where_the_machine_puts_it(machine: str, boot_ram: int,
                                                      base: int) -> None:
    """hw/arm/virt.c: ``ROUND_UP(vms->memmap[VIRT_MEM].base + ms->ram_size, GiB)``;
    hw/i386/pc.c ``pc_memory_init``: ``ROUND_UP(above_4g_mem_start + above_4g_mem_size,
    1 * GiB)`` with pc_q35.c ``if (machine->ram_size >= 0xb0000000) lowmem = 0x80000000;
    else lowmem = 0xb0000000;`` and pc_piix.c's 3.5G default split, 3G with gigabyte_align."""
    cfg = _config(machine, boot_ram=boot_ram)
    cfg.maxmem = boot_ram + 4 * GiB
    layout = cfg.layout()
    assert layout.device_area_base == base
    assert layout.devices[0].addr == base


def test_pc_with_ram_overlapping_its_device_area_is_refused() -> None:
    """The guest's boot RAM starts at 1 GiB (AArch64), a PC's device area at 4 GiB for
    RAM below its 3.5 GiB split: between 3 and 3.5 GiB they would overlap."""
    cfg = _config("pc", boot_ram=3200 * MiB)
    with pytest.raises(ConfigError, match="overlaps the device memory area"):
        cfg.layout()


@pytest.mark.parametrize(("machine", "name", "limit"), [
    (VIRT, "virt-7.2", 512), (PC, "pc-i440fx-7.2", 255), (Q35, "pc-q35-7.2", 288)])
def test_each_machine_has_qemus_cpu_limit(machine: Personality, name: str, limit: int) -> None:
    """hw/core/machine-smp.c: "Invalid SMP CPUs %d. The max CPUs supported by machine '%s'
    is %d" with the machine class's max_cpus (virt 512, i440fx 255, q35 288 in 7.2)."""
    assert machine.qemu_machine == name
    cfg = MachineConfig(machine=machine.name, smp=limit + 1)
    with pytest.raises(ConfigError, match=f"Invalid SMP CPUs {limit + 1}. The max CPUs "
                                          f"supported by machine '{name}' is {limit}"):
        cfg.layout()


def test_unknown_machine_types_are_refused() -> None:
    with pytest.raises(ConfigError, match="unsupported machine type 'microvm'"):
        MachineConfig(machine="microvm").layout()


def test_memslot_decision_follows_qemu() -> None:
    """hw/virtio/virtio-mem.c ``virtio_mem_decide_memslots``: ``memslot_size =
    QEMU_ALIGN_UP(region_size / limit, vmem->block_size); min_memslot_size =
    MAX(vmem->block_size, VIRTIO_MEM_MIN_MEMSLOT_SIZE); memslot_size = MAX(memslot_size,
    min_memslot_size);`` and hw/mem/memory-device.c's limit: ``MEMORY_DEVICES_SOFT_MEMSLOT_LIMIT
    - required_memslots``, all of it when "We cannot have any other memory devices", else
    ``(double)memslots * size / available_space``."""
    assert memslot_limit(2 * GiB, 2 * GiB, 0, 0) == 256
    assert memslot_limit(2 * GiB, 8 * GiB, 0, 0) == 64
    assert memslot_limit(2 * GiB, 8 * GiB, 2 * GiB, 3) == int(253 * 2 / 6)
    assert memslot_limit(1 * GiB, 8 * GiB, 0, 256) == 1
    assert decide_memslots(2 * GiB, 2 * MiB, 256) == (2, 1 * GiB)
    assert decide_memslots(2560 * MiB, 2 * MiB, 256) == (3, 1 * GiB)  # the last: 512 MiB
    assert decide_memslots(1 * GiB, 2 * MiB, 256) == (1, 1 * GiB)
    assert decide_memslots(1024 * GiB, 2 * MiB, 256) == (256, 4 * GiB)  # region / limit
    assert decide_memslots(8 * GiB, 2 * GiB, 256) == (4, 2 * GiB)  # at least a block
    assert decide_memslots(8 * GiB, 2 * MiB, 1) == (1, 8 * GiB)
    layout = MachineConfig(devices=[
        MemoryDeviceConfig(id="vm0", size=3 * GiB, dynamic_memslots=True),
        MemoryDeviceConfig(id="vm1", size=1 * GiB)]).layout()
    assert [(d.nb_memslots, d.memslot_size) for d in layout.devices] == [(3, GiB), (1, 0)]


def test_the_snapshot_says_which_qemu_the_machine_follows(
        make_machine: MachineFactory) -> None:
    m = make_machine(_config("q35", rfc_write_protect=True))
    snap = m.snapshot()
    assert (snap.machine, snap.qemu_machine, snap.qemu_version) == ("q35", "pc-q35-7.2", "7.2")
    assert snap.device("vm0").unplugged_policy == "x-rfc-write-protect"
    assert machine_state(snap)["qemu_machine"] == "pc-q35-7.2"
    m2 = make_machine(MachineConfig(devices=[MemoryDeviceConfig(id="vm0", size=GiB)]))
    assert m2.snapshot().machine == "virt"
    assert m2.snapshot().device("vm0").unplugged_policy == "shipped"


def test_a_machine_migrates_only_to_the_same_rules(make_machine: MachineFactory) -> None:
    """Another machine type is another machine: its RAM block has another name (the machine's
    default_ram_id), and QEMU's RAM section, which comes before any device state, refuses the
    stream ("Unknown ramblock \"%s\", cannot accept migration"); the device area moved too
    ("Property 'memaddr' changed from 0x%" PRIx64 " to 0x%" PRIx64) but is never reached."""
    src = make_machine(_config("virt", boot_ram=1 * GiB))
    wait_settled(src)
    import io

    from emulator.migration import save_machine

    stream = io.BytesIO()
    save_machine(src, stream)
    dest = Machine(_config("q35", boot_ram=1 * GiB), incoming=True)
    try:
        stream.seek(0)
        with pytest.raises(Exception, match=re.escape(
                'Unknown ramblock "mach-virt.ram", cannot accept migration')):
            dest.load_state(stream)
    finally:
        dest.close()
