"""pc-dimm: a DIMM of RAM hot(un)plugged as a whole, as QEMU's ``hw/mem/pc-dimm.c`` does.

``device_add pc-dimm,id=dimm1,memdev=d1[,node=N][,slot=S][,addr=A]`` maps one memory backend
into the machine's device-memory area (the same area virtio-mem regions live in). Placing it
runs QEMU 7.2's checks in QEMU's order, with QEMU's texts:

1. ``qdev_device_add``: the id (``Duplicate device ID 'dimm1'``), then the properties
   (``Property 'pc-dimm.foo' not found``, ``Device 'nope' not found`` for an unknown memdev);
2. ``pc_dimm_pre_plug``: a slot (``no slots where allocated, please specify the 'slots'
   option``, ``invalid slot number 4, valid range is [0-3]``, ``slot 1 is busy``, ``no free
   slots available``), the backend (``'memdev' property must be set``), then
   ``memory_device_get_free_addr``: room (``not enough space, currently 0x40000000 in use of
   total space for memory devices 0x1c0000000``), alignment of the address and of the size
   (``address must be aligned to 0x200000 bytes``, ``backend memory size must be multiple of
   0x200000``), the range, and the first free address;
3. ``pc_dimm_realize``: the backend must be free (``can't use already busy memdev: d1``) and
   the node must exist (``'DIMM property node has value 1' which exceeds the number of numa
   nodes: 1``).

Unplugging is the guest's decision (ACPI, ``device.acpi_memhp``); the DIMM stays plugged
across a reset. Pure Python: the emulator maps the backend's host memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from device.errors import ConfigError
from device.memory_backend import MemoryBackends

#: QEMU's alignment of a pc-dimm's address and size: the backend's page alignment, which for
#: anonymous RAM is QEMU_VMALLOC_ALIGN (2 MiB, the THP size, on x86-64 and aarch64 hosts)
DIMM_ALIGN = 2 << 20
#: ACPI_MAX_RAM_SLOTS: the most memory slots a machine may have
MAX_SLOTS = 256
PC_DIMM_PROPERTIES = ("id", "memdev", "node", "slot", "addr", "bus")
PERIPHERAL = "/machine/peripheral"


@dataclass
class PcDimm:
    """A plugged DIMM (QOM properties ``addr``, ``slot``, ``node``, ``size``, ``memdev``)."""

    id: str
    memdev: str
    addr: int
    size: int
    slot: int
    node: int
    hotplugged: bool
    path: str = ""  # QOM path: /machine/peripheral/ID, or peripheral-anon/device[N] without id

    def __post_init__(self) -> None:
        if not self.path:
            self.path = f"{PERIPHERAL}/{self.id}"

    @property
    def end(self) -> int:
        return self.addr + self.size

    def state(self) -> dict[str, object]:
        return {"id": self.id, "memdev": self.memdev, "addr": self.addr, "size": self.size,
                "slot": self.slot, "node": self.node, "hotplugged": self.hotplugged,
                "path": self.path}


@dataclass(frozen=True)
class DimmRequest:
    """``device_add pc-dimm,...`` as given (None: the property was not set)."""

    id: str | None
    memdev: str | None = None
    node: int = 0
    slot: int | None = None
    addr: int | None = None


@dataclass(frozen=True)
class DeviceMemory:
    """The machine's device-memory area and what already lives in it."""

    base: int
    size: int  # maxmem - RAM
    slots: int  # -m ...,slots=N
    nr_nodes: int
    occupied: tuple[tuple[str, int, int], ...] = ()  # (id, addr, size) of memory devices
    dimm_slots_used: tuple[int, ...] = ()


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def free_slot(hint: int | None, max_slots: int, used: Iterable[int]) -> int:
    """QEMU's ``pc_dimm_get_free_slot``."""
    if max_slots <= 0:
        raise ConfigError("no slots where allocated, please specify the 'slots' option")
    busy = set(used)
    if hint is not None:
        if hint >= max_slots or hint < 0:
            raise ConfigError(f"invalid slot number {hint}, valid range is [0-{max_slots - 1}]")
        if hint in busy:
            raise ConfigError(f"slot {hint} is busy")
        return hint
    slot = next((s for s in range(max_slots) if s not in busy), max_slots)
    if slot == max_slots:
        raise ConfigError("no free slots available")
    return slot


def free_address(area: DeviceMemory, hint: int | None, size: int,
                 align: int = DIMM_ALIGN) -> int:
    """QEMU's ``memory_device_get_free_addr`` (hw/mem/memory-device.c), checks in its order."""
    if area.size <= 0:
        raise ConfigError("memory devices (e.g. for memory hotplug) are not enabled, please "
                          "specify the maxmem option")
    used = sum(s for _i, _a, s in area.occupied)
    if used + size > area.size:
        raise ConfigError(f"not enough space, currently 0x{used:x} in use of total space for "
                          f"memory devices 0x{area.size:x}")
    if hint is not None and hint % align:
        raise ConfigError(f"address must be aligned to 0x{align:x} bytes")
    if size % align:
        raise ConfigError(f"backend memory size must be multiple of 0x{align:x}")
    end = area.base + area.size
    if hint is not None:
        if hint < area.base or hint + size > end:
            raise ConfigError(f"can't add memory device [0x{hint:x}:0x{size:x}], usable range "
                              f"for memory devices [0x{area.base:x}:0x{area.size:x}]")
        start = hint
    else:
        start = _align_up(area.base, align)
    for dev_id, addr, dsize in sorted(area.occupied, key=lambda o: o[1]):
        if addr < start + size and start < addr + dsize:
            if hint is not None:
                raise ConfigError(f"address range conflicts with memory device id='{dev_id}'")
            start = _align_up(addr + dsize, align)
        elif addr >= start + size:
            break
    if start < area.base or start + size > end:
        raise ConfigError("could not find position in guest address space for memory device "
                          "- memory fragmented due to alignments")
    return start


def plan_dimm(req: DimmRequest, area: DeviceMemory, backends: MemoryBackends,
              device_ids: Sequence[str], anon_index: int = 0) -> PcDimm:
    """Everything ``device_add pc-dimm`` checks before the DIMM exists; the DIMM to plug.

    ``device_ids``: every device id the machine has (ids are one namespace in QEMU);
    ``anon_index``: the N of ``/machine/peripheral-anon/device[N]`` for a DIMM without id.
    Raises ``ConfigError`` with QEMU's text; nothing changes on failure.
    """
    if req.id is not None and req.id in device_ids:
        raise ConfigError(f"Duplicate device ID '{req.id}'")
    backend = None
    if req.memdev is not None:
        backend = backends.get(req.memdev)
        if backend is None:
            raise ConfigError(f"Device '{req.memdev}' not found")
    slot = free_slot(req.slot, area.slots, area.dimm_slots_used)
    if backend is None:
        raise ConfigError("'memdev' property must be set")
    addr = free_address(area, req.addr or None, backend.size)
    if backend.used_by is not None:
        raise ConfigError(f"can't use already busy memdev: {backend.id}")
    nodes = area.nr_nodes
    if (nodes > 0 and req.node >= nodes) or (not nodes and req.node):
        raise ConfigError(f"'DIMM property node has value {req.node}' which exceeds the number "
                          f"of numa nodes: {nodes or 1}")
    path = (f"{PERIPHERAL}/{req.id}" if req.id is not None
            else f"/machine/peripheral-anon/device[{anon_index}]")
    return PcDimm(req.id or "", backend.id, addr, backend.size, slot, req.node,
                  hotplugged=True, path=path)
