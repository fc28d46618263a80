"""Read what the guest exports about itself (``struct abi_guest_view`` in guest memory).

The numbers the page shows for "guest view" come from the guest's own allocator and driver,
read straight out of its RAM. The guest is untrusted: every address it reports is checked
against boot RAM before it is read, and anything malformed gives ``None``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator import abi
from emulator.backing import HostMemory


@dataclass(frozen=True)
class AllocationView:
    id: int
    unmovable: bool
    pages: int
    seed: int
    target: int


@dataclass(frozen=True)
class GuestDeviceView:
    """The driver's own idea of one device."""

    addr: int
    block_size: int
    nb_blocks: int
    memory_block_size: int
    memory_blocks_added: int
    plugged_size: int
    requested_size: int
    requests: int
    acks: int
    nacks: int
    busies: int
    errors: int
    migrated_pages: int
    state: str
    features: int
    usage: tuple[tuple[int, int, int, int], ...]  # per block: movable, unmovable, free, state


@dataclass(frozen=True)
class GuestView:
    boot_pages: int
    boot_free: int
    boot_movable: int
    boot_unmovable: int
    boot_kernel: int
    faults: int
    last_fault_addr: int
    allocations: tuple[AllocationView, ...]
    devices: tuple[GuestDeviceView | None, ...]


def _read(ram: HostMemory, gpa: int, size: int) -> bytes | None:
    if size < 0 or not ram.contains(gpa, max(size, 1)):
        return None
    return ram.read(gpa - ram.gpa, size)


def read_guest_view(ram: HostMemory, addr: int, nr_devices: int) -> GuestView | None:
    raw = _read(ram, addr, abi.VIEW_SIZE)
    if raw is None:
        return None
    head = abi.VIEW_HEAD.unpack_from(raw, 0)
    magic, version, _nr = head[0], head[1], head[2]
    if magic != abi.VIEW_MAGIC or version != abi.VIEW_VERSION:
        return None
    boot_pages, boot_free, boot_mov, boot_unmov, boot_kernel, allocs_addr, faults, last = head[3:]
    devices: list[GuestDeviceView | None] = []
    for i in range(nr_devices):
        values = abi.DEVICE_VIEW.unpack_from(raw, abi.VIEW_HEAD.size + i * abi.DEVICE_VIEW.size)
        devices.append(_device_view(ram, dict(zip(abi.DEVICE_VIEW_FIELDS, values, strict=True))))
    return GuestView(
        boot_pages, boot_free, boot_mov, boot_unmov, boot_kernel, faults, last,
        _allocations(ram, allocs_addr), tuple(devices),
    )


def _device_view(ram: HostMemory, f: dict[str, int]) -> GuestDeviceView | None:
    nb = f["nb_blocks"]
    usage: tuple[tuple[int, int, int, int], ...] = ()
    if f["usage_addr"] and 0 < nb <= (1 << 24):
        raw = _read(ram, f["usage_addr"], nb * abi.BLOCK_USAGE.size)
        if raw is not None:
            usage = tuple(abi.BLOCK_USAGE.iter_unpack(raw))
    return GuestDeviceView(
        addr=f["addr"], block_size=f["block_size"], nb_blocks=nb,
        memory_block_size=f["memory_block_size"],
        memory_blocks_added=f["memory_blocks_added"], plugged_size=f["plugged_size"],
        requested_size=f["requested_size"], requests=f["requests"], acks=f["acks"],
        nacks=f["nacks"], busies=f["busies"], errors=f["errors"],
        migrated_pages=f["migrated_pages"],
        state=abi.DRIVER_STATES.get(f["state"], f"unknown({f['state']})"),
        features=f["features"], usage=usage,
    )


def _allocations(ram: HostMemory, addr: int) -> tuple[AllocationView, ...]:
    raw = _read(ram, addr, abi.MAX_ALLOCS * abi.ALLOC_RECORD.size) if addr else None
    if raw is None:
        return ()
    return tuple(
        AllocationView(id_, bool(flags & abi.ALLOC_UNMOVABLE), pages, seed, target)
        for id_, flags, pages, seed, target in abi.ALLOC_RECORD.iter_unpack(raw)
        if id_ != 0
    )
