"""The machine's memory as QEMU's monitor shows it: ``info ramblock``, ``info mtree``,
``info memdev`` / ``query-memdev``, ``query-memory-size-summary``, ``query-events``.

Every value comes from the machine's layout and configuration (addresses, sizes, NUMA
memdevs, devices); the formats are QEMU 7.2's (``ram_block_format``, ``mtree_print_mr``,
``hmp_info_memdev``). The boot RAM's block is named as the machine type names it
(``mach-virt.ram`` on ``-machine virt``, ``pc.ram`` on pc/q35); the rest of the board is
always arm virt's low memory map (``pl011``, ``virtio-mmio``, RAM at 1 GiB: the guest is
AArch64 code whatever the personality), with the device area where the machine type puts it
(docs/personalities.md). What vmemlab leaves out of these views (firmware flash and ROM
blocks, the GIC, the PCIe host bridge, x86's ``ram-below-4g``/PCI/ISA regions, regions of
devices it does not model) is listed in docs/model.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emulator import abi
from emulator.board import device_ramblock_id
from monitor.commands import MonitorContext, MonitorError, memory_size_summary
from monitor.qmp_events import EVENTS
from monitor.qobject_order import qobject

# arm "virt" names (QEMU 7.2, hw/arm/virt.c); the RAM's comes from the machine type
UART_NAME, UART_SIZE = "pl011", 0x1000
VIRTIO_MMIO_NAME = "virtio-mmio"
TARGET_PAGE = 4096
RAM_OFFSET_ALIGN = 64 << 12  # find_ram_offset: BITS_PER_LONG << TARGET_PAGE_BITS


def size_to_str(value: int) -> str:
    """QEMU's ``size_to_str``: ``4 KiB``, ``2 MiB``, ``1.5 GiB``."""
    suffixes = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    exponent = math.frexp(value / (1000.0 / 1024.0))[1] if value else 0
    i = max(0, (exponent - 1) // 10)
    return "%0.3g %sB" % (value / (1 << (i * 10)), suffixes[i])  # noqa: UP031 (C's %g)


# ------------------------------------------------------------------------------ backends

@dataclass(frozen=True)
class Backend:
    """One memory backend object (``/objects/ID``) and the RAM block it makes."""

    id: str
    size: int
    block: str  # RAMBlock idstr


def _memdev(config: Any) -> str:
    return str(config.memdev or config.id)


def backends(ctx: MonitorContext) -> list[Backend]:
    """Every memory backend in creation order: the NUMA nodes' memdevs and the command line's
    other ``-object memory-backend-*`` (virtio-mem memdevs, DIMM backends, spares) are created
    before the machine, then -- when no node has one -- the machine's default RAM backend,
    then what ``object_add`` made at run time.

    A virtio-mem device's RAM block is named after the device's path (QEMU's
    ``vmstate_register_ram(…, dev)``): ``0000:00:03.0/mem0`` for the device in slot 3; any
    other backend's RAM block is its id (``Unknown ramblock "d1"``).
    """
    machine = ctx.machine
    layout = machine.layout
    sizes = {n.node_id: n.ram_size for n in layout.nodes}
    out = [Backend(n.memdev, sizes[n.node_id], n.memdev)
           for n in machine.config.nodes if n.memdev]
    numa_memdevs = bool(out)
    slots = {_memdev(p.config): p.index for p in layout.devices}
    hotplug = machine.hotplug
    made = hotplug.backend_list()
    for backend in made[:hotplug.boot_backends]:
        index = slots.get(backend.id)
        block = backend.id if index is None else device_ramblock_id(index, backend.id)
        out.append(Backend(backend.id, backend.size, block))
    if not numa_memdevs:
        ram = layout.machine.default_ram_id
        out.append(Backend(ram, layout.boot_ram_size, ram))
    out += [Backend(b.id, b.size, b.id) for b in made[hotplug.boot_backends:]]
    return out


def query_memdev(ctx: MonitorContext) -> list[dict[str, Any]]:
    """``query-memdev`` (QAPI ``Memdev``). QEMU walks ``/objects`` (a hash table) and
    prepends each backend; vmemlab lists the last created first."""
    return [{"id": b.id, "size": b.size, "merge": True, "dump": True, "prealloc": False,
             "share": False, "reserve": True, "host-nodes": [], "policy": "default"}
            for b in reversed(backends(ctx))]


def fmt_memdev(memdevs: list[dict[str, Any]]) -> str:
    """``hmp_info_memdev``."""

    def yes(value: bool) -> str:
        return "true" if value else "false"

    return "".join(
        f"memory backend: {m['id']}\n"
        f"  size:  {m['size']}\n"
        f"  merge: {yes(m['merge'])}\n"
        f"  dump: {yes(m['dump'])}\n"
        f"  prealloc: {yes(m['prealloc'])}\n"
        f"  share: {yes(m['share'])}\n"
        f"  reserve: {yes(m['reserve'])}\n"
        f"  policy: {m['policy']}\n"
        f"  host nodes: {','.join(str(n) for n in m['host-nodes'])}\n"
        for m in memdevs)


# ------------------------------------------------------------------------------ ramblock

@dataclass(frozen=True)
class RamBlock:
    name: str
    page_size: int
    offset: int
    used: int
    total: int


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def ram_blocks(ctx: MonitorContext) -> list[RamBlock]:
    """The RAM list as QEMU keeps it: biggest block first (``ram_block_add``), each placed
    at the ram_addr ``find_ram_offset`` picks, in creation order."""
    blocks: list[RamBlock] = []
    huge = {d.memdev: d.page_size for d in ctx.machine.config.devices}  # hugetlb backends
    for backend in backends(ctx):
        size = backend.size
        offset = 0
        if blocks:
            offset, mingap = -1, 1 << 64
            for block in blocks:
                candidate = _align_up(block.offset + block.total, RAM_OFFSET_ALIGN)
                after = [b.offset for b in blocks if b.offset >= candidate]
                gap = (min(after) if after else 1 << 64) - candidate
                if size <= gap < mingap:
                    offset, mingap = candidate, gap
            if offset < 0:  # cannot happen below 2^64 bytes of RAM
                raise MonitorError("Failed to find gap of requested size")
        new = RamBlock(backend.block, huge.get(backend.id) or TARGET_PAGE, offset, size, size)
        at = next((i for i, b in enumerate(blocks) if b.total < size), len(blocks))
        blocks.insert(at, new)
    return blocks


def fmt_ramblock(blocks: list[RamBlock]) -> str:
    """``ram_block_format``."""
    lines = [f"{'Block Name':>24} {'PSize':>8}  {'Offset':>18} {'Used':>18} {'Total':>18}\n"]
    lines += [f"{b.name:>24} {size_to_str(b.page_size):>8}  0x{b.offset:016x} "
              f"0x{b.used:016x} 0x{b.total:016x}\n" for b in blocks]
    return "".join(lines)


# ------------------------------------------------------------------------------ mtree

@dataclass(frozen=True)
class Region:
    """A memory region at its absolute address (``kind``: ``ram`` or ``i/o``)."""

    start: int
    size: int
    kind: str
    name: str
    children: tuple[Region, ...] = ()
    priority: int = 0


def system_memory(ctx: MonitorContext) -> Region:
    """The ``system`` container with what vmemlab's board maps into it."""
    machine = ctx.machine
    layout = machine.layout
    parts = [Region(abi.UART_BASE, UART_SIZE, "i/o", UART_NAME)]
    parts += [Region(abi.VIRTIO_MMIO_BASE + p.index * abi.VIRTIO_MMIO_STRIDE,
                     abi.VIRTIO_MMIO_STRIDE, "i/o", VIRTIO_MMIO_NAME) for p in layout.devices]
    memdevs = {n.node_id: n.memdev for n in machine.config.nodes}
    nodes = tuple(Region(n.ram_base, n.ram_size, "ram", memdevs[n.node_id])
                  for n in layout.nodes if memdevs.get(n.node_id))
    ram = layout.machine.default_ram_id
    if nodes:  # numa_init_memdev_container: the nodes' backends inside one container
        parts.append(Region(layout.boot_ram_base, layout.boot_ram_size, "i/o", ram, nodes))
    else:
        parts.append(Region(layout.boot_ram_base, layout.boot_ram_size, "ram", ram))
    if layout.device_area_size:
        devices = tuple(Region(p.addr, p.config.size, "ram", _memdev(p.config))
                        for p in layout.devices)
        parts.append(Region(layout.device_area_base, layout.device_area_size, "i/o",
                            "device-memory", devices))
    return Region(0, 1 << 64, "i/o", "system", tuple(parts))


def _mtree_lines(region: Region, level: int) -> list[str]:
    end = region.start + region.size - 1
    out = [f"{'  ' * level}{region.start:016x}-{end:016x} (prio {region.priority}, "
           f"{region.kind}): {region.name}\n"]
    # mtree_print_mr: subregions by address, then higher priority first
    for child in sorted(region.children, key=lambda r: (r.start, -r.priority)):
        out += _mtree_lines(child, level + 1)
    return out


def fmt_mtree(ctx: MonitorContext) -> str:
    """``info mtree``: every address space with its root (``mtree_info_as``)."""
    cpus = max(1, ctx.machine.config.smp)
    names = "".join(f"address-space: cpu-memory-{i}\n" for i in range(cpus))
    memory = names + "address-space: memory\n" + "".join(
        _mtree_lines(system_memory(ctx), 1)) + "\n"
    io = ("address-space: I/O\n"
          "  0000000000000000-000000000000ffff (prio 0, i/o): io\n\n")
    return memory + io


# ------------------------------------------------------------------------------ QMP

def query_memory_size_summary(ctx: MonitorContext) -> dict[str, Any]:
    """``query-memory-size-summary`` (QAPI ``MemoryInfo``)."""
    return qobject(memory_size_summary(ctx))


def query_events(ctx: MonitorContext) -> list[dict[str, str]]:
    """``query-events``: the events vmemlab emits; QEMU prepends each name of its schema's
    event enum, so the last in schema order comes first."""
    return [{"name": name} for name in reversed(EVENTS)]
