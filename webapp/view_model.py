"""What the page draws, computed from one ``MachineSnapshot``.

The page never interprets the machine itself. Its view is the snapshot's JSON form
(:func:`emulator.snapshot.machine_state`, the same a recording's keyframes hold) plus what only
a live machine measures: per-block state codes (one byte per block, for the guest view and for
the host view; the codes are ``webapp/block_states.py``'s), host residency, the guest's
allocations. Live events then move single blocks between states until the next snapshot
replaces the picture wholesale.
"""

from __future__ import annotations

import base64
from typing import Any, TypedDict

from emulator import abi
from emulator.snapshot import (
    DeviceSnapshot,
    DeviceState,
    MachineSnapshot,
    MachineState,
    machine_state,
)
from webapp import block_states
from webapp.block_states import BlockState


class MemoryBlockRow(TypedDict):
    """One of Linux's memory blocks over the device, as the grid frames it (a row)."""

    name: str  # memoryN (memoryN..M for a Big Block Mode block)
    first_block: int
    blocks: int
    state: str  # the guest's memory-block state (abi.MB_STATES)
    zone: str  # Movable, Normal, offline or none


class DeviceView(DeviceState):
    broken: bool
    memory_block_size: int  # the guest's own (0: the guest has not said yet)
    memory_blocks: list[MemoryBlockRow]
    guest: bytes  # codes: what the guest's allocator thinks, per block
    host: bytes  # codes: what the host backs, per block
    resident: int  # host bytes resident behind the device
    plugged_blocks: int


class Allocation(TypedDict):
    id: int
    unmovable: bool
    pages: int
    target: int


class MachineView(MachineState[DeviceView]):
    uptime_ns: int
    host_rss: int  # the server process's RSS
    resident: int  # host bytes resident behind the machine (boot RAM + devices)
    allocations: list[Allocation]


def guest_codes(dev: DeviceSnapshot, usage: tuple[tuple[int, int, int, int], ...]) -> bytes:
    """Per block: what the guest's allocator thinks (falls back to the device bitmap)."""
    bs = dev.block_size
    usable_blocks = dev.usable_region_size // bs
    codes = bytearray(dev.nb_blocks)
    have_usage = len(usage) == dev.nb_blocks
    for i, plugged in enumerate(dev.bitmap):
        if plugged:
            code = BlockState.PLUGGED_FREE
            if have_usage:
                movable, unmovable, _free, state = usage[i]
                if state == abi.BLOCK_OFFLINING:
                    code = BlockState.IN_FLIGHT
                elif unmovable:
                    code = BlockState.PLUGGED_UNMOVABLE
                elif movable:
                    code = BlockState.PLUGGED_MOVABLE
            codes[i] = code
        elif i >= usable_blocks:
            codes[i] = BlockState.OUTSIDE_USABLE
    return bytes(codes)


def host_codes(dev: DeviceSnapshot, resident: tuple[int, ...] | None = None,
               *, stale: bool = False) -> bytes:
    """Per block: what the host really backs (pagemap residency).

    ``resident`` defaults to the snapshot's own; a ``stale`` one (taken a moment earlier,
    off the hot path) is trusted for plugged blocks only: an unplugged block was discarded
    when it was unplugged, so it shows host memory only where the snapshot itself says a
    rogue write put data since (``written_unplugged``, current), or a fresh sample does.
    """
    bs = dev.block_size
    usable_blocks = dev.usable_region_size // bs
    if resident is None:
        resident = dev.resident
    if resident is None or len(resident) != dev.nb_blocks:
        resident = (0,) * dev.nb_blocks
    codes = bytearray(dev.nb_blocks)
    for i, plugged in enumerate(dev.bitmap):
        res = resident[i]
        if plugged:
            codes[i] = (BlockState.HOST_PLUGGED_EMPTY if res == 0
                        else BlockState.HOST_RESIDENT if res >= bs
                        else BlockState.HOST_PARTLY_RESIDENT)
        elif (res and not stale) or (i < len(dev.written_unplugged)
                                     and dev.written_unplugged[i]):
            codes[i] = BlockState.HOST_UNPLUGGED_RESIDENT
        elif i >= usable_blocks:
            codes[i] = BlockState.OUTSIDE_USABLE
    return bytes(codes)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def device_usage(snap: MachineSnapshot, index: int) -> tuple[tuple[int, int, int, int], ...]:
    guest = snap.guest
    if guest is None or index >= len(guest.devices):
        return ()
    view = guest.devices[index]
    return view.usage if view is not None else ()


def device_view(snap: MachineSnapshot, index: int, state: DeviceState,
                residency: dict[str, tuple[int, ...]] | None = None) -> DeviceView:
    """One device as the page draws it: its ``state`` (from ``machine_state``) and the codes
    (raw bytes; see ``encode_view``).

    ``residency`` (device id -> bytes resident per block) stands in for a snapshot taken
    without residency; see ``host_codes``.
    """
    dev = snap.devices[index]
    resident = dev.resident
    stale = resident is None
    if stale and residency is not None:
        resident = residency.get(dev.id)
    plugged_resident = sum(r for r, p in zip(resident or (), dev.bitmap, strict=False) if p)
    guest = snap.guest
    gdev = guest.devices[index] if guest is not None and index < len(guest.devices) else None
    return {
        **state,
        "broken": dev.broken,
        "memory_block_size": gdev.memory_block_size if gdev is not None else 0,
        "memory_blocks": [
            {"name": mb.name, "first_block": mb.first_block, "blocks": mb.blocks,
             "state": mb.state, "zone": mb.zone}
            for mb in (gdev.memory_blocks if gdev is not None else ())],
        "guest": guest_codes(dev, device_usage(snap, index)),
        "host": host_codes(dev, resident, stale=stale),
        "resident": plugged_resident if stale else sum(resident or ()),
        "plugged_blocks": dev.plugged_blocks,
    }


def machine_view(snap: MachineSnapshot, residency: dict[str, tuple[int, ...]] | None = None,
                 boot_resident: int | None = None) -> MachineView:
    """Everything the page shows about the machine at ``snap.seq`` (codes still bytes)."""
    state = machine_state(snap)
    devices = {dev.id: device_view(snap, i, state["devices"][dev.id], residency)
               for i, dev in enumerate(snap.devices)}
    if snap.boot_resident is not None:
        boot_resident = snap.boot_resident
    guest = snap.guest
    return {
        **state,
        "devices": devices,
        "uptime_ns": snap.uptime_ns,
        "host_rss": snap.host_rss,
        "resident": (boot_resident or 0) + sum(d["resident"] for d in devices.values()),
        "allocations": [
            {"id": a.id, "unmovable": a.unmovable, "pages": a.pages, "target": a.target}
            for a in (guest.allocations if guest else ())
        ],
    }


def encode_view(view: MachineView, previous: MachineView | None = None) -> dict[str, Any]:
    """JSON form of ``machine_view``: block codes in base64, sent only when they changed
    since ``previous``; no bitmap (the page draws the codes, and the bitmap is in them)."""
    out: dict[str, Any] = dict(view)
    before = previous["devices"] if previous is not None else {}
    devices: dict[str, dict[str, Any]] = {}
    for dev_id, dev in view["devices"].items():
        prev = before.get(dev_id)
        enc: dict[str, Any] = {k: v for k, v in dev.items()
                               if k not in ("bitmap", "guest", "host")}
        if prev is None or prev["guest"] != dev["guest"]:
            enc["guest"] = b64(dev["guest"])
        if prev is None or prev["host"] != dev["host"]:
            enc["host"] = b64(dev["host"])
        devices[dev_id] = enc
    out["devices"] = devices
    return out


def block_info(snap: MachineSnapshot, dev_id: str, block: int,
               residency: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """What hovering over one block shows (``residency``: see ``device_view``): the guest's
    page counts, the memory block it belongs to and that block's zone, the host's residency."""
    index = next(i for i, d in enumerate(snap.devices) if d.id == dev_id)
    dev = snap.devices[index]
    if not 0 <= block < dev.nb_blocks:
        raise IndexError(f"block {block} outside 0..{dev.nb_blocks - 1}")
    usage = device_usage(snap, index)
    movable = unmovable = free = kernel = 0
    if len(usage) == dev.nb_blocks:
        movable, unmovable, free, _ = usage[block]
    gdev = snap.guest.devices[index] if snap.guest and index < len(snap.guest.devices) else None
    memory_block = gdev.memory_block_of(block) if gdev is not None else None
    if gdev is not None and len(gdev.kernel) == dev.nb_blocks:
        kernel = gdev.kernel[block]  # memory maps: unmovable, but not the workload's
    zone = gdev.zones[block] if gdev is not None and len(gdev.zones) == dev.nb_blocks else None
    per_block = dev.resident
    stale = per_block is None
    if stale and residency is not None:
        per_block = residency.get(dev.id)
    if per_block is not None and len(per_block) != dev.nb_blocks:
        per_block = None
    resident = per_block[block] if per_block is not None else None
    if stale and resident and not dev.bitmap[block]:
        resident = 0  # discarded when it was unplugged (see host_codes)
    return {
        "device": dev.id,
        "block": block,
        "addr": dev.addr + block * dev.block_size,
        "size": dev.block_size,
        "plugged": bool(dev.bitmap[block]),
        "guest_state": block_states.name(guest_codes(dev, usage)[block]),
        "host_state": block_states.name(host_codes(dev, per_block, stale=stale)[block]),
        "movable_pages": movable,
        "unmovable_pages": unmovable - kernel,
        "kernel_pages": kernel,
        "free_pages": free,
        "memory_block": memory_block.name if memory_block else None,
        "memory_block_state": memory_block.state if memory_block else None,
        "zone": zone,
        "resident": resident,
        "seq": snap.seq,
    }


def memory_devices(snap: MachineSnapshot, memdevs: dict[str, str]) -> list[dict[str, Any]]:
    """``query-memory-devices`` as QEMU answers it (for the JSON API and page checks)."""
    return [
        {
            "type": "virtio-mem",
            "data": {
                "memaddr": d.addr, "node": d.node, "requested-size": d.requested_size,
                "size": d.plugged_size, "max-size": d.region_size, "block-size": d.block_size,
                "memdev": f"/objects/{memdevs.get(d.id, d.id)}", "id": d.id,
            },
        }
        for d in snap.devices
    ]
