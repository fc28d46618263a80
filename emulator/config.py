"""What a machine is made of, and where QEMU would put each part.

A ``MachineConfig`` is plain data (the QEMU-style command line, scenario files and the web form
all produce one). ``MachineConfig.layout()`` checks it the way QEMU checks its command line
(same error texts) and assigns guest-physical addresses the way QEMU's arm "virt" machine does:
boot RAM at 1 GiB, the memory-device area right after it aligned up to 1 GiB, each virtio-mem
region aligned to its block size, then cold-plugged pc-dimms (``-device pc-dimm``) placed in
the same area by QEMU's ``memory_device_get_free_addr`` (``device.pc_dimm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from device.errors import ConfigError
from device.pc_dimm import MAX_SLOTS, DeviceMemory, PcDimm, free_address, free_slot
from emulator.abi import MAX_DEVICES, MAX_NODES, PAGE_SIZE, RAM_BASE

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_BLOCK_SIZE = 2 * MiB  # QEMU's default: the THP size
MIN_BLOCK_SIZE = 1 * MiB
MAX_CPUS = 512  # QEMU 7.2's arm "virt" machine (mc->max_cpus)
MACHINE_NAME = "virt-7.2"  # what QEMU 7.2 calls that machine in its errors
ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."


def id_wellformed(text: str) -> bool:
    """QEMU's ``id_wellformed`` (util/id.c): an ASCII letter, then letters, digits, -._

    Ids of devices, memory backends and machines end up in pages, file names and QOM
    paths; QEMU refuses any other id with "Parameter 'id' expects an identifier".
    """
    return (bool(text) and text[0].isascii() and text[0].isalpha()
            and all(ch.isascii() and (ch.isalnum() or ch in "-._") for ch in text[1:]))


def check_smp(cpus: int) -> None:
    """QEMU's limit check (hw/core/machine-smp.c) before anything is sized by ``cpus``."""
    if cpus > MAX_CPUS:
        raise ConfigError(f"Invalid SMP CPUs {cpus}. The max CPUs supported by machine "
                          f"'{MACHINE_NAME}' is {MAX_CPUS}")


# The guest command line of the golden transcripts: Linux onlines hot-added memory to
# ZONE_MOVABLE. Without it Linux 6.1 (no CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE, as in Debian)
# leaves added memory offline, and virtio-mem stops adding at its offline threshold.
DEFAULT_GUEST_CMDLINE = "memhp_default_state=online_movable"


@dataclass
class NumaNodeConfig:
    """One NUMA node: its CPUs and the share of boot RAM it holds."""

    node_id: int
    cpus: list[int] = field(default_factory=list)
    mem: int | None = None  # None: an even share of boot RAM


@dataclass
class MemoryDeviceConfig:
    """One ``-object memory-backend-ram`` + ``-device virtio-mem-pci`` pair."""

    id: str
    size: int  # the memory backend's size = region_size ("max-size")
    memdev: str = ""
    node: int = 0
    requested_size: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    memaddr: int | None = None
    unplugged_inaccessible: bool = False
    usable_extent: int = 256 * MiB


@dataclass
class DimmConfig:
    """One ``-object memory-backend-ram`` + ``-device pc-dimm`` pair on the command line."""

    id: str
    memdev: str
    size: int  # the backend's size
    node: int = 0
    slot: int | None = None
    addr: int | None = None


@dataclass
class BackendConfig:
    """A ``-object memory-backend-ram`` no device maps at startup (``device_add`` may later)."""

    id: str
    size: int


#: behaviour models (vmemlab's, not emulations): ``-machine x-behaviour-model=xen|hyperv``
BEHAVIOUR_MODELS = ("", "xen", "hyperv")


@dataclass
class MachineConfig:
    """The whole machine; defaults give a small machine that boots in milliseconds."""

    boot_ram: int = 256 * MiB
    maxmem: int | None = None  # None: exactly enough for the devices
    smp: int = 1
    nodes: list[NumaNodeConfig] = field(default_factory=list)
    devices: list[MemoryDeviceConfig] = field(default_factory=list)
    cmdline: str = DEFAULT_GUEST_CMDLINE
    rfc_shrink_on_reboot: bool = False  # the 2017 RFC's reboot behaviour, as a named option
    persistent_suspend: bool = False  # offer VIRTIO_MEM_F_PERSISTENT_SUSPEND (virtio 1.4)
    slots: int = 0  # -m ...,slots=N: DIMM slots for memory hotplug
    dimms: list[DimmConfig] = field(default_factory=list)  # cold-plugged pc-dimms
    backends: list[BackendConfig] = field(default_factory=list)  # unmapped memory backends
    behaviour_model: str = ""  # "xen" / "hyperv": the RFC's Q&A comparisons (emulator.pv_balloon)

    def layout(self) -> MachineLayout:
        return _layout(self)

    def with_cmdline(self, cmdline: str) -> MachineConfig:
        return replace(self, cmdline=cmdline)


@dataclass(frozen=True)
class NodeLayout:
    node_id: int
    cpus: tuple[int, ...]
    ram_base: int
    ram_size: int


@dataclass(frozen=True)
class DeviceLayout:
    config: MemoryDeviceConfig
    addr: int
    index: int  # virtio-mmio slot


@dataclass(frozen=True)
class MachineLayout:
    boot_ram_base: int
    boot_ram_size: int
    nodes: tuple[NodeLayout, ...]
    device_area_base: int
    device_area_size: int
    devices: tuple[DeviceLayout, ...]
    dimms: tuple[PcDimm, ...] = ()  # cold-plugged (hotplugged=False)
    slots: int = 0

    def device_memory(self, dimms: tuple[PcDimm, ...] | list[PcDimm]) -> DeviceMemory:
        """The device-memory area with the virtio-mem regions and ``dimms`` in it."""
        occupied = tuple((d.config.id, d.addr, d.config.size) for d in self.devices) + tuple(
            (d.id, d.addr, d.size) for d in dimms)
        return DeviceMemory(self.device_area_base, self.device_area_size, self.slots,
                            len(self.nodes) if len(self.nodes) > 1 else 0, occupied,
                            tuple(d.slot for d in dimms))


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _nodes(cfg: MachineConfig) -> list[NumaNodeConfig]:
    if not cfg.nodes:
        return [NumaNodeConfig(0, list(range(cfg.smp)), cfg.boot_ram)]
    if len(cfg.nodes) > MAX_NODES:
        raise ConfigError(f"Max number of NUMA nodes reached: {MAX_NODES}")
    given = [n.mem for n in cfg.nodes]
    if all(m is None for m in given):
        share = cfg.boot_ram // len(cfg.nodes) // (2 * MiB) * (2 * MiB)
        rest = cfg.boot_ram - share * (len(cfg.nodes) - 1)
        return [
            replace(n, mem=share if i < len(cfg.nodes) - 1 else rest)
            for i, n in enumerate(cfg.nodes)
        ]
    total = sum(m or 0 for m in given)
    if total != cfg.boot_ram:
        raise ConfigError(
            f"total memory for NUMA nodes (0x{total:x}) should equal RAM size (0x{cfg.boot_ram:x})"
        )
    return list(cfg.nodes)


def _check_device(dev: MemoryDeviceConfig, nr_nodes: int) -> None:
    bs = dev.block_size
    if bs < MIN_BLOCK_SIZE:
        raise ConfigError(f"'block-size' property has to be at least 0x{MIN_BLOCK_SIZE:x}")
    if bs & (bs - 1):
        raise ConfigError("'block-size' property has to be a power of two")
    if dev.size <= 0 or dev.size % bs:
        raise ConfigError(f"backend memory size must be multiple of 0x{bs:x}")
    if dev.requested_size % bs:
        raise ConfigError(
            f"'requested-size' property has to be multiples of 'block-size' (0x{bs:x})"
        )
    if dev.node >= nr_nodes:
        raise ConfigError(
            f"'node' property has value '{dev.node}', which exceeds"
            f"the number of numa nodes: {nr_nodes}"
        )
    if dev.memaddr is not None and dev.memaddr % bs:
        raise ConfigError(f"address must be aligned to 0x{bs:x} bytes")


def check_memory_options(cfg: MachineConfig) -> None:
    """QEMU's ``-m size,slots,maxmem`` checks (hw/core/machine.c ``machine_set_mem``)."""
    if cfg.maxmem is not None and cfg.maxmem < cfg.boot_ram:
        raise ConfigError(f"invalid value of maxmem: maximum memory size (0x{cfg.maxmem:x}) "
                          f"must be at least the initial memory size (0x{cfg.boot_ram:x})")
    if cfg.slots and cfg.maxmem is None:
        raise ConfigError("slots specified but no max-size")
    if cfg.slots and cfg.maxmem == cfg.boot_ram:
        raise ConfigError(f"invalid value of maxmem: memory slots were specified but maximum "
                          f"memory size (0x{cfg.maxmem:x}) is equal to the initial memory size "
                          f"(0x{cfg.boot_ram:x})")
    if cfg.slots > MAX_SLOTS or cfg.slots < 0:
        raise ConfigError(f"unsupported amount of memory slots: {cfg.slots}")
    if cfg.behaviour_model not in BEHAVIOUR_MODELS:
        raise ConfigError(f"Parameter 'x-behaviour-model' does not accept value "
                          f"'{cfg.behaviour_model}' (expected xen or hyperv)")


def _place_dimms(cfg: MachineConfig, layout: MachineLayout) -> tuple[PcDimm, ...]:
    """Cold-plugged DIMMs, checked and placed in command-line order, as QEMU does."""
    placed: list[PcDimm] = []
    seen = {d.config.id for d in layout.devices}
    memdevs = {d.config.memdev for d in layout.devices}
    nodes = len(layout.nodes) if cfg.nodes else 0
    for dimm in cfg.dimms:
        if not id_wellformed(dimm.id) or not id_wellformed(dimm.memdev):
            raise ConfigError("Parameter 'id' expects an identifier")
        if dimm.id in seen:
            raise ConfigError(f"Duplicate ID '{dimm.id}' for device")
        if dimm.memdev in memdevs:
            raise ConfigError(f"can't use already busy memdev: {dimm.memdev}")
        seen.add(dimm.id)
        memdevs.add(dimm.memdev)
        slot = free_slot(dimm.slot, cfg.slots, (d.slot for d in placed))
        addr = free_address(layout.device_memory(placed), dimm.addr or None, dimm.size)
        if (nodes and dimm.node >= nodes) or (not nodes and dimm.node):
            raise ConfigError(f"'DIMM property node has value {dimm.node}' which exceeds the "
                              f"number of numa nodes: {nodes or 1}")
        placed.append(PcDimm(dimm.id, dimm.memdev, addr, dimm.size, slot, dimm.node,
                             hotplugged=False))
    return tuple(placed)


def _xen_model(cfg: MachineConfig) -> MachineConfig:
    """The Xen model's guest sees ``maxmem`` of RAM (the host gives ``-m`` of it at first)."""
    if cfg.devices or cfg.dimms or cfg.slots:
        raise ConfigError("x-behaviour-model=xen models a Xen guest's RAM and balloon only: "
                          "no memory devices, no DIMM slots")
    ram = cfg.maxmem if cfg.maxmem is not None else cfg.boot_ram
    return replace(cfg, boot_ram=ram, maxmem=ram, behaviour_model="")


def _layout(cfg: MachineConfig) -> MachineLayout:
    check_smp(cfg.smp)
    check_memory_options(cfg)
    if cfg.behaviour_model == "xen":
        return _layout(_xen_model(cfg))
    for dev in cfg.devices:
        if not id_wellformed(dev.id) or (dev.memdev and not id_wellformed(dev.memdev)):
            raise ConfigError("Parameter 'id' expects an identifier")
    if cfg.boot_ram <= 0 or cfg.boot_ram % (2 * MiB):
        raise ConfigError(f"boot RAM size 0x{cfg.boot_ram:x} must be a multiple of 2 MiB")
    if len(cfg.devices) > MAX_DEVICES:
        raise ConfigError(f"at most {MAX_DEVICES} virtio-mem devices are supported")
    nodes = _nodes(cfg)
    node_layouts = []
    base = RAM_BASE
    for n in nodes:
        size = n.mem or 0
        node_layouts.append(NodeLayout(n.node_id, tuple(n.cpus), base, size))
        base += size

    device_area_base = _align_up(RAM_BASE + cfg.boot_ram, GiB)
    needed = sum(d.size for d in cfg.devices)
    needed += sum(d.size for d in cfg.dimms)
    if cfg.maxmem is None:
        area_size = _align_up(needed, GiB) if cfg.devices or cfg.dimms else 0
    else:
        area_size = cfg.maxmem - cfg.boot_ram
        if cfg.devices and area_size <= 0:
            raise ConfigError(
                "memory devices (e.g. for memory hotplug) are not enabled, "
                "please specify the maxmem option"
            )
    seen: set[str] = set()
    placed: list[DeviceLayout] = []
    cursor = device_area_base
    used = 0
    for index, dev in enumerate(cfg.devices):
        if dev.id in seen:
            raise ConfigError(f"Duplicate ID '{dev.id}' for device")
        seen.add(dev.id)
        _check_device(dev, len(nodes))
        if used + dev.size > area_size:
            raise ConfigError(
                f"not enough space, currently 0x{used:x} in use of total space for memory "
                f"devices 0x{area_size:x}"
            )
        if dev.memaddr is not None:
            addr = dev.memaddr
            end = device_area_base + area_size
            if addr < device_area_base or addr + dev.size > end:
                raise ConfigError(
                    f"can't add memory device [0x{addr:x}:0x{dev.size:x}], usable range for "
                    f"memory devices [0x{device_area_base:x}:0x{area_size:x}]"
                )
        else:
            addr = _align_up(cursor, dev.block_size)
        for other in placed:
            if addr < other.addr + other.config.size and other.addr < addr + dev.size:
                raise ConfigError(
                    f"address range conflicts with memory device id='{other.config.id}'"
                )
        placed.append(DeviceLayout(dev, addr, index))
        cursor = max(cursor, addr + dev.size)
        used += dev.size
    layout = MachineLayout(
        boot_ram_base=RAM_BASE,
        boot_ram_size=cfg.boot_ram,
        nodes=tuple(node_layouts),
        device_area_base=device_area_base,
        device_area_size=area_size,
        devices=tuple(placed),
        slots=cfg.slots,
    )
    if not cfg.dimms:
        return layout
    return replace(layout, dimms=_place_dimms(cfg, layout))


assert 4 * KiB == PAGE_SIZE
