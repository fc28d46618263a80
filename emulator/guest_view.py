"""Read what the guest exports about itself (``struct abi_guest_view`` in guest memory).

The numbers the page shows for "guest view" come from the guest's own allocator and driver,
read straight out of its RAM. The guest is untrusted: every address it reports is checked
against boot RAM before it is read, and anything malformed gives ``None``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator import abi
from emulator.backing import HostMemory

MAX_BLOCKS = 1 << 24


@dataclass(frozen=True)
class AllocationView:
    id: int
    unmovable: bool
    pages: int
    seed: int
    target: int


@dataclass(frozen=True)
class MemoryBlockView:
    """One of the guest's memory blocks (Linux's ``memoryN``; in Big Block Mode a big block,
    which spans several Linux memory blocks, all onlined alike)."""

    id: int  # Linux's memory block id of its start: address // memory block size
    state: str  # abi.MB_STATES: unused, plugged, offline[-partial], kernel[-partial], ...
    first_block: int  # its first device block
    blocks: int  # device blocks in it
    span: int = 1  # Linux memory blocks in it

    @property
    def name(self) -> str:
        if self.span == 1:
            return f"memory{self.id}"
        return f"memory{self.id}..{self.id + self.span - 1}"

    @property
    def zone(self) -> str:
        """What sysfs would call it: Movable, Normal, offline, or none (not added)."""
        if self.state.startswith("movable"):
            return "Movable"
        if self.state.startswith("kernel"):
            return "Normal"
        if self.state.startswith("offline"):
            return "offline"
        return "none"


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
    # per device block: movable, unmovable (pinned + kernel), free pages, ABI_BLOCK_* state
    usage: tuple[tuple[int, int, int, int], ...]
    kernel: tuple[int, ...] = ()  # per device block: kernel pages (memory maps) among unmovable
    zones: tuple[str, ...] = ()  # per device block: abi.ZONE_NAMES of its memory block
    subblock_size: int = 0
    memory_blocks: tuple[MemoryBlockView, ...] = ()  # those wholly inside the region
    offline_size: int = 0  # added but offline memory, bytes
    offline_threshold: int = 0
    memmap_pages: int = 0  # pages holding the memory maps of the added memory blocks

    def memory_block_of(self, block: int) -> MemoryBlockView | None:
        """The memory block a device block belongs to (None: outside every memory block)."""
        for mb in self.memory_blocks:
            if mb.first_block <= block < mb.first_block + mb.blocks:
                return mb
        return None


@dataclass(frozen=True)
class GuestDimmView:
    """A DIMM slot as the guest's ACPI memory hotplug driver sees it."""

    slot: int
    addr: int
    size: int
    state: str  # abi.DIMM_STATES: none, added, ejecting, failed
    last_ost: tuple[int, int]  # (source, status) of the last _OST the guest sent
    attempts: int
    failures: int
    memmap_pages: int
    # per 2 MiB block: movable, unmovable (pinned + kernel), free pages, ABI_BLOCK_* state
    usage: tuple[tuple[int, int, int, int], ...] = ()
    kernel: tuple[int, ...] = ()
    zones: tuple[str, ...] = ()
    memory_blocks: tuple[MemoryBlockView, ...] = ()


@dataclass(frozen=True)
class PvBalloonView:
    """The behaviour models' balloon driver (Xen / Hyper-V models)."""

    target: int
    ram_pages: int
    ballooned_pages: int
    gives: int
    takes: int
    state: str  # abi.PVB_STATES
    model: int


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
    online_type: str = "offline"  # memhp_default_state=
    online_policy: str = "contig-zones"  # memory_hotplug.online_policy=
    auto_movable_ratio: int = 301
    dimms: tuple[GuestDimmView, ...] = ()  # the slots the guest knows of, by slot
    pv_balloon: PvBalloonView | None = None

    def dimm(self, slot: int) -> GuestDimmView | None:
        return next((d for d in self.dimms if d.slot == slot), None)


def _read(ram: HostMemory, gpa: int, size: int) -> bytes | None:
    if size < 0 or not ram.contains(gpa, max(size, 1)):
        return None
    return ram.read(gpa - ram.gpa, size)


def read_guest_view(ram: HostMemory, addr: int, nr_devices: int) -> GuestView | None:
    raw = _read(ram, addr, abi.VIEW_V2_SIZE)
    if raw is None:
        return None
    head = abi.VIEW_HEAD.unpack_from(raw, 0)
    magic, version, _nr = head[0], head[1], head[2]
    if magic != abi.VIEW_MAGIC or version != abi.VIEW_VERSION:
        return None
    (boot_pages, boot_free, boot_mov, boot_unmov, boot_kernel, allocs_addr, faults, last,
     online_type, online_policy, ratio) = head[3:]
    devices: list[GuestDeviceView | None] = []
    for i in range(nr_devices):
        values = abi.DEVICE_VIEW.unpack_from(raw, abi.VIEW_HEAD.size + i * abi.DEVICE_VIEW.size)
        devices.append(_device_view(ram, dict(zip(abi.DEVICE_VIEW_FIELDS, values, strict=True))))
    dimms, balloon = _v3(ram, addr + abi.VIEW_V2_SIZE)
    return GuestView(
        boot_pages, boot_free, boot_mov, boot_unmov, boot_kernel, faults, last,
        _allocations(ram, allocs_addr), tuple(devices),
        online_type=abi.ONLINE_TYPES.get(online_type, f"unknown({online_type})"),
        online_policy=abi.ONLINE_POLICIES.get(online_policy, f"unknown({online_policy})"),
        auto_movable_ratio=ratio, dimms=dimms, pv_balloon=balloon,
    )


def _v3(ram: HostMemory, at: int) -> tuple[tuple[GuestDimmView, ...], PvBalloonView | None]:
    """The DIMM slots and the balloon (view version 3), every number bounded."""
    head = _read(ram, at, abi.VIEW_V3_HEAD.size + abi.PVB_VIEW.size)
    if head is None:
        return (), None
    nr_slots = min(abi.VIEW_V3_HEAD.unpack_from(head)[0], abi.MAX_DIMM_SLOTS)
    b = dict(zip(abi.PVB_VIEW_FIELDS,
                 abi.PVB_VIEW.unpack_from(head, abi.VIEW_V3_HEAD.size), strict=True))
    balloon = None
    if b["model"]:
        balloon = PvBalloonView(b["target"], b["ram_pages"], b["ballooned_pages"], b["gives"],
                              b["takes"], abi.PVB_STATES.get(b["state"],
                                                                 f"unknown({b['state']})"),
                              b["model"])
    raw = _read(ram, at + len(head), nr_slots * abi.DIMM_VIEW.size) if nr_slots else b""
    if raw is None:
        return (), balloon
    dimms = []
    for slot, values in enumerate(abi.DIMM_VIEW.iter_unpack(raw)):
        f = dict(zip(abi.DIMM_VIEW_FIELDS, values, strict=True))
        if f["state"] == abi.DIMM_NONE:
            continue
        dimms.append(_dimm_view(ram, slot, f))
    return tuple(dimms), balloon


def _dimm_view(ram: HostMemory, slot: int, f: dict[str, int]) -> GuestDimmView:
    nb = f["size"] // abi.DIMM_BLOCK_SIZE
    usage: tuple[tuple[int, int, int, int], ...] = ()
    kernel: tuple[int, ...] = ()
    zones: tuple[str, ...] = ()
    if f["usage_addr"] and 0 < nb <= MAX_BLOCKS:
        rows_raw = _read(ram, f["usage_addr"], nb * abi.BLOCK_USAGE.size)
        if rows_raw is not None:
            rows = list(abi.BLOCK_USAGE.iter_unpack(rows_raw))
            usage = tuple((mov, unmov, free, st) for mov, unmov, free, st, _k, _z in rows)
            kernel = tuple(row[4] for row in rows)
            zones = tuple(abi.ZONE_NAMES.get(row[5], f"unknown({row[5]})") for row in rows)
    mbs: tuple[MemoryBlockView, ...] = ()
    nr = f["nr_mbs"]
    if f["mb_states_addr"] and 0 < nr <= MAX_BLOCKS and nb:
        states = _read(ram, f["mb_states_addr"], nr)
        per = max(1, nb // nr)
        if states is not None:
            mbs = tuple(MemoryBlockView(f["first_mb_id"] + m,
                                        abi.MB_STATES.get(st, f"unknown({st})"), m * per, per)
                        for m, st in enumerate(states))
    ost = f["last_ost"]
    return GuestDimmView(slot, f["addr"], f["size"],
                         abi.DIMM_STATES.get(f["state"], f"unknown({f['state']})"),
                         (ost >> 16, ost & 0xFFFF), f["attempts"], f["failures"],
                         f["memmap_pages"], usage, kernel, zones, mbs)


def _memory_blocks(ram: HostMemory, f: dict[str, int]) -> tuple[MemoryBlockView, ...]:
    nr, bs, mbs = f["nr_mbs"], f["block_size"], f["memory_block_size"]
    if not f["mb_states_addr"] or not 0 < nr <= MAX_BLOCKS or not bs or mbs < bs:
        return ()
    raw = _read(ram, f["mb_states_addr"], nr)
    if raw is None:
        return ()
    per = mbs // bs
    linux = f["linux_mb_size"]
    span = mbs // linux if linux and mbs % linux == 0 else 1
    return tuple(
        MemoryBlockView(f["first_mb_id"] + m * span, abi.MB_STATES.get(st, f"unknown({st})"),
                        f["first_mb_block"] + m * per, per, span)
        for m, st in enumerate(raw)
    )


def _device_view(ram: HostMemory, f: dict[str, int]) -> GuestDeviceView | None:
    nb = f["nb_blocks"]
    usage: tuple[tuple[int, int, int, int], ...] = ()
    kernel: tuple[int, ...] = ()
    zones: tuple[str, ...] = ()
    if f["usage_addr"] and 0 < nb <= MAX_BLOCKS:
        raw = _read(ram, f["usage_addr"], nb * abi.BLOCK_USAGE.size)
        if raw is not None:
            rows = list(abi.BLOCK_USAGE.iter_unpack(raw))
            usage = tuple((mov, unmov, free, st) for mov, unmov, free, st, _k, _z in rows)
            kernel = tuple(row[4] for row in rows)
            zones = tuple(abi.ZONE_NAMES.get(row[5], f"unknown({row[5]})") for row in rows)
    return GuestDeviceView(
        addr=f["addr"], block_size=f["block_size"], nb_blocks=nb,
        memory_block_size=f["memory_block_size"],
        memory_blocks_added=f["memory_blocks_added"], plugged_size=f["plugged_size"],
        requested_size=f["requested_size"], requests=f["requests"], acks=f["acks"],
        nacks=f["nacks"], busies=f["busies"], errors=f["errors"],
        migrated_pages=f["migrated_pages"],
        state=abi.DRIVER_STATES.get(f["state"], f"unknown({f['state']})"),
        features=f["features"], usage=usage, kernel=kernel, zones=zones,
        subblock_size=f["subblock_size"], memory_blocks=_memory_blocks(ram, f),
        offline_size=f["offline_size"], offline_threshold=f["offline_threshold"],
        memmap_pages=f["memmap_pages"],
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
