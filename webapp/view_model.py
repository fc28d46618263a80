"""What the page draws, computed from one ``MachineSnapshot``.

The page never interprets the machine itself: the server turns a snapshot into per-block state
codes (one byte per device block, for the guest view and for the host view), the config space
as a register map and a few numbers for the charts. Live events then move single blocks between
states until the next snapshot replaces the picture wholesale; the codes below are shared with
``static/grid.js`` (``STATES``), which draws each code with its own colour *and* pattern.
"""

from __future__ import annotations

import base64
from typing import Any

from emulator import abi
from emulator.snapshot import DeviceSnapshot, MachineSnapshot

# ---- block state codes (shared with static/grid.js) -------------------------------------
UNPLUGGED = 0  # unplugged (reads give the zero page, or nothing)
PLUGGED_FREE = 1  # plugged, the guest holds nothing in it
PLUGGED_MOVABLE = 2  # plugged, holds movable data (can be migrated away, so unpluggable)
PLUGGED_UNMOVABLE = 3  # plugged, holds unmovable (pinned) data
IN_FLIGHT = 4  # requested but not yet answered / being emptied by the guest
OUTSIDE_USABLE = 5  # beyond usable_region_size: the guest may not plug it
HOST_PLUGGED_EMPTY = 6  # host view: plugged, no host memory behind it yet
HOST_PARTLY_RESIDENT = 7  # host view: plugged, some pages resident
HOST_RESIDENT = 8  # host view: plugged, every page resident
HOST_LEAK = 9  # host view: unplugged but host memory resident (must never be seen)

STATE_NAMES = {
    UNPLUGGED: "unplugged",
    PLUGGED_FREE: "plugged, free",
    PLUGGED_MOVABLE: "plugged, movable data",
    PLUGGED_UNMOVABLE: "plugged, unmovable data",
    IN_FLIGHT: "in flight",
    OUTSIDE_USABLE: "outside the usable region",
    HOST_PLUGGED_EMPTY: "plugged, no host memory yet",
    HOST_PARTLY_RESIDENT: "plugged, partly resident",
    HOST_RESIDENT: "plugged, resident",
    HOST_LEAK: "unplugged but resident (leak!)",
}
PLUGGED_CODES = frozenset({PLUGGED_FREE, PLUGGED_MOVABLE, PLUGGED_UNMOVABLE,
                           HOST_PLUGGED_EMPTY, HOST_PARTLY_RESIDENT, HOST_RESIDENT})

CONFIG_FIELDS = ("block_size", "node_id", "addr", "region_size", "usable_region_size",
                 "plugged_size", "requested_size")


def guest_codes(dev: DeviceSnapshot, usage: tuple[tuple[int, int, int, int], ...]) -> bytes:
    """Per block: what the guest's allocator thinks (falls back to the device bitmap)."""
    bs = dev.block_size
    usable_blocks = dev.usable_region_size // bs
    codes = bytearray(dev.nb_blocks)
    have_usage = len(usage) == dev.nb_blocks
    for i, plugged in enumerate(dev.bitmap):
        if plugged:
            code = PLUGGED_FREE
            if have_usage:
                movable, unmovable, _free, state = usage[i]
                if state == abi.BLOCK_OFFLINING:
                    code = IN_FLIGHT
                elif unmovable:
                    code = PLUGGED_UNMOVABLE
                elif movable:
                    code = PLUGGED_MOVABLE
            codes[i] = code
        elif i >= usable_blocks:
            codes[i] = OUTSIDE_USABLE
    return bytes(codes)


def host_codes(dev: DeviceSnapshot, resident: tuple[int, ...] | None = None,
               *, stale: bool = False) -> bytes:
    """Per block: what the host really backs (pagemap residency).

    ``resident`` defaults to the snapshot's own; a ``stale`` one (taken a moment earlier,
    off the hot path) is trusted for plugged blocks only: an unplugged block was discarded
    when it was unplugged, so it shows no host memory until a fresh sample says otherwise.
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
            codes[i] = (HOST_PLUGGED_EMPTY if res == 0
                        else HOST_RESIDENT if res >= bs else HOST_PARTLY_RESIDENT)
        elif res and not stale:
            codes[i] = HOST_LEAK
        elif i >= usable_blocks:
            codes[i] = OUTSIDE_USABLE
    return bytes(codes)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def config_fields(dev: DeviceSnapshot) -> dict[str, int]:
    return {
        "block_size": dev.block_size, "node_id": dev.node, "addr": dev.addr,
        "region_size": dev.region_size, "usable_region_size": dev.usable_region_size,
        "plugged_size": dev.plugged_size, "requested_size": dev.requested_size,
    }


def device_usage(snap: MachineSnapshot, index: int) -> tuple[tuple[int, int, int, int], ...]:
    guest = snap.guest
    if guest is None or index >= len(guest.devices):
        return ()
    view = guest.devices[index]
    return view.usage if view is not None else ()


def device_view(snap: MachineSnapshot, index: int,
                residency: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """One device as the page draws it (codes as raw bytes; see ``encode_view``).

    ``residency`` (device id → bytes resident per block) stands in for a snapshot taken
    without residency; see ``host_codes``.
    """
    dev = snap.devices[index]
    usage = device_usage(snap, index)
    resident = dev.resident
    stale = resident is None
    if stale and residency is not None:
        resident = residency.get(dev.id)
    host = host_codes(dev, resident, stale=stale)
    plugged_resident = sum(r for r, p in zip(resident or (), dev.bitmap, strict=False) if p)
    return {
        "id": dev.id,
        "node": dev.node,
        "nb_blocks": dev.nb_blocks,
        "block_size": dev.block_size,
        "addr": dev.addr,
        "config": config_fields(dev),
        "driver_state": dev.driver_state,
        "broken": dev.broken,
        "unplugged_inaccessible": dev.unplugged_inaccessible,
        "guest": guest_codes(dev, usage),
        "host": host,
        "resident": plugged_resident if stale else sum(resident or ()),
        "plugged_blocks": dev.plugged_blocks,
    }


def machine_view(snap: MachineSnapshot, residency: dict[str, tuple[int, ...]] | None = None,
                 boot_resident: int | None = None) -> dict[str, Any]:
    """Everything the page shows about the machine at ``snap.seq`` (codes still bytes)."""
    devices = [device_view(snap, i, residency) for i in range(len(snap.devices))]
    if snap.boot_resident is not None:
        boot_resident = snap.boot_resident
    boot_share = {n.node_id: n.boot_ram for n in snap.nodes}
    guest = snap.guest
    return {
        "seq": snap.seq,
        "runstate": snap.runstate,
        "cmdline": snap.cmdline,
        "guest_booted": snap.guest_booted,
        "guest_faults": snap.guest_faults,
        "uptime_ns": snap.uptime_ns,
        "boot_ram_size": snap.boot_ram_size,
        "nodes": [
            {"node_id": n.node_id, "cpus": list(n.cpus), "boot_ram": boot_share[n.node_id],
             "plugged": n.plugged}
            for n in snap.nodes
        ],
        "devices": devices,
        "host_rss": snap.host_rss,
        "resident": (boot_resident or 0) + sum(d["resident"] for d in devices),
        "allocations": [
            {"id": a.id, "unmovable": a.unmovable, "pages": a.pages, "target": a.target}
            for a in (guest.allocations if guest else ())
        ],
    }


def encode_view(view: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON form of ``machine_view``; block codes are sent only when they changed."""
    out = dict(view)
    devices = []
    for i, dev in enumerate(view["devices"]):
        prev = None
        if previous is not None and i < len(previous["devices"]):
            prev = previous["devices"][i]
            if prev["id"] != dev["id"]:
                prev = None
        enc = {k: v for k, v in dev.items() if k not in ("guest", "host")}
        for key in ("guest", "host"):
            if prev is None or prev[key] != dev[key]:
                enc[key] = b64(dev[key])
        devices.append(enc)
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
        "guest_state": STATE_NAMES[guest_codes(dev, usage)[block]],
        "host_state": STATE_NAMES[host_codes(dev, per_block, stale=stale)[block]],
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
