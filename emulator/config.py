"""What a machine is made of, and where QEMU would put each part.

A ``MachineConfig`` is plain data (the QEMU-style command line, scenario files and the web form
all produce one). ``MachineConfig.layout()`` checks it the way QEMU checks its command line
(same error texts) and assigns guest-physical addresses the way the machine type
(``emulator.machine_types``: arm ``virt``, the default, or x86 ``pc``/``q35``) does: boot RAM
at 1 GiB (where the AArch64 guest expects it), the memory-device area where that machine puts
it, each virtio-mem region aligned to its block size (with ``dynamic-memslots=on``: how many
memslots QEMU splits each region into), then cold-plugged pc-dimms (``-device pc-dimm``)
placed in the same area by QEMU's ``memory_device_get_free_addr`` (``device.pc_dimm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from device.errors import ConfigError
from device.pc_dimm import MAX_SLOTS, DeviceMemory, PcDimm, free_address, free_slot
from emulator.abi import MAX_DEVICES, MAX_NODES, PAGE_SIZE, RAM_BASE
from emulator.machine_types import DEFAULT_MACHINE, VIRT, Personality, personality
from emulator.machine_types import unplugged_inaccessible as resolve_unplugged_inaccessible

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_BLOCK_SIZE = 2 * MiB  # QEMU's default: the THP size
MIN_BLOCK_SIZE = 1 * MiB
MAX_CPUS = VIRT.max_cpus  # QEMU 7.2's arm "virt" machine (mc->max_cpus)
MACHINE_NAME = VIRT.qemu_machine  # what QEMU 7.2 calls that machine in its errors
# hw/virtio/virtio-mem.c: "The minimum memslot size depends on this setting ("sane
# default"), the device block size, and the memory backend page size."
MIN_MEMSLOT_SIZE = 1 * (1 << 30)  # VIRTIO_MEM_MIN_MEMSLOT_SIZE
# hw/mem/memory-device.c (QEMU 8.2): memslots across all memory devices
MEMORY_DEVICES_SOFT_MEMSLOT_LIMIT = 256
ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."


def id_wellformed(text: str) -> bool:
    """QEMU's ``id_wellformed`` (util/id.c): an ASCII letter, then letters, digits, -._

    Ids of devices, memory backends and machines end up in pages, file names and QOM
    paths; QEMU refuses any other id with "Parameter 'id' expects an identifier".
    """
    return (bool(text) and text[0].isascii() and text[0].isalpha()
            and all(ch.isascii() and (ch.isalnum() or ch in "-._") for ch in text[1:]))


def check_smp(cpus: int, machine: Personality = VIRT) -> None:
    """QEMU's limit check (hw/core/machine-smp.c) before anything is sized by ``cpus``."""
    if cpus > machine.max_cpus:
        raise ConfigError(f"Invalid SMP CPUs {cpus}. The max CPUs supported by machine "
                          f"'{machine.qemu_machine}' is {machine.max_cpus}")


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
    memdev: str = ""  # the id of its -numa node,memdev= backend ("": none), for the monitor


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
    unplugged_inaccessible: bool | str | None = None
    """None: the machine's default (x86 7.2: "auto"; arm: always on); "on"/"off"/"auto"."""
    shared_zeropage: bool = True
    """The backend is private anonymous RAM (memory-backend-ram): "auto" resolves to off."""
    dynamic_memslots: bool = False
    """QEMU 8.2's ``dynamic-memslots=on``: memslots mapped only while something is plugged."""
    rfc_write_protect: bool = False
    """``x-rfc-write-protect=on``: the 2017 RFC's write-protected unplugged memory."""
    guest_requests: bool = False
    """``x-guest-requests=on``: vmemlab's experimental guest -> host request queue."""
    page_size: int = 0
    """The backend's huge page size (hugetlb=on / a hugetlbfs mem-path); 0: host pages."""
    memory_type: str = ""
    """``x-memory-type=ram|ram-huge``: vmemlab's experiment of the RFC addendum's types."""


@dataclass
class BalloonConfig:
    """``-device virtio-balloon-pci,id=ID[,deflate-on-oom=on][,free-page-reporting=on]``."""

    id: str = "balloon0"
    deflate_on_oom: bool = False
    free_page_reporting: bool = False
    page_poison: bool = True  # QEMU's default: offered (Linux does not accept it)
    must_tell_host: bool = False  # x-must-tell-host: vmemlab's; QEMU never offers the bit
    stats_polling_interval: int = 0  # guest-stats-polling-interval, seconds (0: off)


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
    machine: str = DEFAULT_MACHINE  # -machine: virt (arm, the default), pc or q35 (x86)
    balloon: BalloonConfig | None = None  # a virtio-balloon device, after the memory devices
    slots: int = 0  # -m ...,slots=N: DIMM slots for memory hotplug
    dimms: list[DimmConfig] = field(default_factory=list)  # cold-plugged pc-dimms
    backends: list[BackendConfig] = field(default_factory=list)  # unmapped memory backends
    behaviour_model: str = ""  # "xen" / "hyperv": the RFC's Q&A comparisons (emulator.pv_balloon)

    @property
    def personality(self) -> Personality:
        """The QEMU rules this machine follows (ConfigError for an unknown -machine)."""
        return personality(self.machine)

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
    unplugged_inaccessible: bool = True  # resolved: offers VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE
    nb_memslots: int = 1  # dynamic-memslots: how many memslots the region is split into
    memslot_size: int = 0  # ... each this big (the last may be smaller); 0: one memslot


@dataclass(frozen=True)
class MachineLayout:
    machine: Personality
    boot_ram_base: int
    boot_ram_size: int
    nodes: tuple[NodeLayout, ...]
    device_area_base: int
    device_area_size: int
    devices: tuple[DeviceLayout, ...]
    balloon_slot: int | None = None  # virtio-mmio slot of the balloon (after the devices)
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


def _check_device(dev: MemoryDeviceConfig, nr_nodes: int, machine: Personality) -> bool:
    """QEMU's realize checks of one device; returns whether it offers UNPLUGGED_INACCESSIBLE."""
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
    inaccessible = resolve_unplugged_inaccessible(machine, dev.unplugged_inaccessible,
                                                  dev.shared_zeropage)
    # virtio_mem_device_realize: "'%s' property set to 'on' requires '%s' to be 'on'"
    if dev.dynamic_memslots and not inaccessible:
        raise ConfigError("'dynamic-memslots' property set to 'on' requires "
                          "'unplugged-inaccessible' to be 'on'")
    return inaccessible


def decide_memslots(region_size: int, block_size: int, limit: int) -> tuple[int, int]:
    """(memslots, memslot size) of a ``dynamic-memslots=on`` device: QEMU's
    ``virtio_mem_decide_memslots``. One memslot covers the whole region when ``limit`` <= 1;
    else "All memslots except the last one have a reasonable minimum size, and all memslot
    sizes are aligned to the device block size"."""
    if limit <= 1:
        return 1, region_size
    memslot_size = _align_up(region_size // limit, block_size)
    memslot_size = max(memslot_size, max(block_size, MIN_MEMSLOT_SIZE))
    memslots = _align_up(region_size, memslot_size) // memslot_size
    return memslots, (memslot_size if memslots != 1 else region_size)


def memslot_limit(size: int, device_space: int, used_region_size: int,
                  required_memslots: int) -> int:
    """QEMU 8.2's ``memory_device_memslot_decision_limit`` without KVM or vhost (as under
    TCG: no memslot limit but the soft one): "equally distribute the memslots over the space
    still available for memory devices"."""
    if required_memslots >= MEMORY_DEVICES_SOFT_MEMSLOT_LIMIT:
        return 1
    memslots = MEMORY_DEVICES_SOFT_MEMSLOT_LIMIT - required_memslots
    if size == device_space:  # "We cannot have any other memory devices?"
        return memslots
    available = device_space - used_region_size
    if available <= 0:
        return 1
    memslots = int(memslots * size / available)
    return max(memslots, 1)


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
    machine = cfg.personality
    check_smp(cfg.smp, machine)
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
    _check_balloon(cfg)
    nodes = _nodes(cfg)
    node_layouts = []
    base = RAM_BASE
    for n in nodes:
        size = n.mem or 0
        node_layouts.append(NodeLayout(n.node_id, tuple(n.cpus), base, size))
        base += size

    device_area_base = machine.device_area_base(cfg.boot_ram, RAM_BASE)
    if RAM_BASE + cfg.boot_ram > device_area_base:
        raise ConfigError(
            f"boot RAM [0x{RAM_BASE:x}:0x{cfg.boot_ram:x}] (where the AArch64 guest expects "
            f"it) overlaps the device memory area machine '{machine.name}' starts at "
            f"0x{device_area_base:x}; choose another -m")
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
    required_memslots = 0
    for index, dev in enumerate(cfg.devices):
        if dev.id in seen:
            raise ConfigError(f"Duplicate ID '{dev.id}' for device")
        seen.add(dev.id)
        inaccessible = _check_device(dev, len(nodes), machine)
        memslots, memslot_size = 1, 0
        if dev.dynamic_memslots:
            limit = memslot_limit(dev.size, area_size, used, required_memslots)
            memslots, memslot_size = decide_memslots(dev.size, dev.block_size, limit)
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
        placed.append(DeviceLayout(dev, addr, index, inaccessible, memslots, memslot_size))
        cursor = max(cursor, addr + dev.size)
        used += dev.size
        required_memslots += memslots
    layout = MachineLayout(
        machine=machine,
        boot_ram_base=RAM_BASE,
        boot_ram_size=cfg.boot_ram,
        nodes=tuple(node_layouts),
        device_area_base=device_area_base,
        device_area_size=area_size,
        devices=tuple(placed),
        balloon_slot=len(placed) if cfg.balloon is not None else None,
        slots=cfg.slots,
    )
    if not cfg.dimms:
        return layout
    return replace(layout, dimms=_place_dimms(cfg, layout))


def _check_balloon(cfg: MachineConfig) -> None:
    """The balloon takes the virtio-mmio slot after the memory devices (QEMU's texts)."""
    balloon = cfg.balloon
    if balloon is None:
        return
    if not id_wellformed(balloon.id):
        raise ConfigError("Parameter 'id' expects an identifier")
    if any(dev.id == balloon.id for dev in cfg.devices):
        raise ConfigError(f"Duplicate ID '{balloon.id}' for device")
    if len(cfg.devices) + 1 > MAX_DEVICES:
        raise ConfigError(f"at most {MAX_DEVICES} virtio devices are supported "
                          f"({len(cfg.devices)} virtio-mem devices and a balloon)")
    if not 0 <= balloon.stats_polling_interval <= 0xFFFF_FFFF:
        raise ConfigError("timer value must be greater than zero"
                          if balloon.stats_polling_interval < 0 else "timer value is too big")


assert 4 * KiB == PAGE_SIZE
