"""Which QEMU the machine follows: its personality (``-machine virt|pc|q35``).

QEMU's virtio-mem device is one source file built per target, and a few of its rules differ
by target and by machine type (hw/virtio/virtio-mem.c, QEMU 7.2):

* the usable region's extent beyond ``requested_size`` -- ``VIRTIO_MEM_USABLE_EXTENT`` is
  ``(2 * (128 * MiB))`` for TARGET_X86_64/TARGET_I386 and ``(2 * (512 * MiB))`` for TARGET_ARM
  (Linux's memory section: 128 MiB on x86-64, up to 512 MiB on arm64);
* ``unplugged-inaccessible`` -- a property only ``#if defined(VIRTIO_MEM_HAS_LEGACY_GUESTS)``,
  i.e. on x86 ("We only had legacy x86 guests that did not support
  VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE"); elsewhere ``vmem->unplugged_inaccessible =
  ON_OFF_AUTO_ON``. Its x86 default in QEMU 7.2 is ``auto`` (``pc_compat_6_2`` sets "off" for
  machine types up to 6.2; QEMU 8.1 made "on" the default and ``pc_compat_8_0`` keeps "auto");
* where the device area starts: arm ``virt`` puts it right after RAM, rounded up to 1 GiB; a
  PC puts it after the RAM above 4 GiB (``ROUND_UP(above_4g_mem_start +
  above_4g_mem_size, 1 * GiB)``), after splitting RAM below 4 GiB at ``lowmem``;
* what an access to guest-physical memory with nothing mapped does (only reachable with
  ``dynamic-memslots=on``): the access ends in ``unassigned_mem_ops`` (reads 0, writes
  ignored, ``accepts`` false, so the dispatch reports ``MEMTX_DECODE_ERROR``); TCG on arm
  turns that into a synchronous external abort (``arm_cpu_do_transaction_failed``:
  ``fi.type = ARMFault_SyncExternal``), x86 has no such hook: the read gives 0 and the write
  is dropped. (Under KVM both architectures take an MMIO exit whose result QEMU ignores:
  reads 0, writes dropped.)

The guest is AArch64 code whatever the personality: boot RAM stays at ``RAM_BASE`` where it
expects it; the personality decides the device's rules and the device area only.
docs/personalities.md says which QEMU version each personality follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ON_OFF_AUTO = ("on", "off", "auto")


@dataclass(frozen=True)
class Personality:
    """One ``-machine`` type: the QEMU rules the device and the memory map follow."""

    name: str  # what -machine accepts
    qemu_machine: str  # what QEMU 7.2 calls it in its errors (the versioned alias)
    target: str  # the QEMU target whose virtio-mem.c rules apply
    qemu_version: str
    max_cpus: int
    usable_extent: int  # VIRTIO_MEM_USABLE_EXTENT
    has_unplugged_inaccessible_property: bool  # VIRTIO_MEM_HAS_LEGACY_GUESTS
    unplugged_inaccessible_default: str  # "on" | "off" | "auto"
    unassigned_access: str  # "abort" (TCG arm) | "ignore" (x86): with nothing mapped there
    default_ram_id: str  # mc->default_ram_id: the boot RAM's RAMBlock (monitor, migration)

    def device_area_base(self, boot_ram: int, ram_base: int) -> int:
        """Where QEMU puts the memory-device area for ``-m boot_ram``."""
        if self.target == "aarch64":
            # hw/arm/virt.c: ROUND_UP(vms->memmap[VIRT_MEM].base + ms->ram_size, GiB)
            return _align_up(ram_base + boot_ram, GiB)
        above_4g = max(0, boot_ram - self.lowmem(boot_ram))
        # hw/i386/pc.c pc_memory_init: ROUND_UP(above_4g_mem_start + above_4g_mem_size, 1 GiB)
        return _align_up(4 * GiB + above_4g, GiB)

    def lowmem(self, boot_ram: int) -> int:
        """RAM below 4 GiB on a PC: hw/i386/pc_piix.c / pc_q35.c for 7.2 machine types."""
        if self.name == "q35":
            # pc_q35_init: "if (machine->ram_size >= 0xb0000000) lowmem = 0x80000000;
            # else lowmem = 0xb0000000;"
            return 0x8000_0000 if boot_ram >= 0xB000_0000 else 0xB000_0000
        # pc_init1: max_ram_below_4g defaults to 0xe0000000 (3.5G); with gigabyte_align a
        # RAM that has to be split is split at 3G ("qemu -M pc -m 4G -> 3072M low, 1024M high")
        if boot_ram >= 0xE000_0000:
            return 0xC000_0000
        return 0xE000_0000


VIRT = Personality(
    name="virt", qemu_machine="virt-7.2", target="aarch64", qemu_version="7.2",
    max_cpus=512, usable_extent=2 * (512 * MiB), has_unplugged_inaccessible_property=False,
    unplugged_inaccessible_default="on", unassigned_access="abort",
    default_ram_id="mach-virt.ram")
PC = Personality(
    name="pc", qemu_machine="pc-i440fx-7.2", target="x86_64", qemu_version="7.2",
    max_cpus=255, usable_extent=2 * (128 * MiB), has_unplugged_inaccessible_property=True,
    unplugged_inaccessible_default="auto", unassigned_access="ignore",
    default_ram_id="pc.ram")
Q35 = Personality(
    name="q35", qemu_machine="pc-q35-7.2", target="x86_64", qemu_version="7.2",
    max_cpus=288, usable_extent=2 * (128 * MiB), has_unplugged_inaccessible_property=True,
    unplugged_inaccessible_default="auto", unassigned_access="ignore",
    default_ram_id="pc.ram")

PERSONALITIES: dict[str, Personality] = {
    "virt": VIRT, "virt-7.2": VIRT,
    "pc": PC, "pc-i440fx-7.2": PC,
    "q35": Q35, "pc-q35-7.2": Q35,
}
DEFAULT_MACHINE = "virt"


def personality(name: str) -> Personality:
    """The personality ``-machine name`` selects; ConfigError with QEMU's text otherwise."""
    found = PERSONALITIES.get(name)
    if found is None:
        raise ConfigError(f"unsupported machine type '{name}' (vmemlab has "
                          f"{', '.join(sorted(set(p.name for p in PERSONALITIES.values())))})")
    return found


def unplugged_inaccessible(machine: Personality, value: bool | str | None,
                           shared_zeropage: bool) -> bool:
    """Whether the device offers VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE (QEMU's realize).

    ``value``: None (the machine's default), "on"/"off"/"auto", or a bool (on/off).
    ``shared_zeropage``: the backend is private anonymous memory of the host page size
    (``virtio_mem_has_shared_zeropage``): "auto" then resolves to off, else to on.
    """
    if isinstance(value, bool):
        value = "on" if value else "off"
    if not machine.has_unplugged_inaccessible_property:
        if value == "off":
            raise ConfigError(
                f"'unplugged-inaccessible' cannot be off on machine '{machine.name}': "
                "QEMU has that property only on x86 and is always 'on' here")
        return True
    setting = machine.unplugged_inaccessible_default if value is None else value
    if setting not in ON_OFF_AUTO:
        raise ConfigError(f"Parameter 'unplugged-inaccessible' does not accept value "
                          f"'{setting}'")
    if setting == "auto":
        return not shared_zeropage
    return setting == "on"


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align
