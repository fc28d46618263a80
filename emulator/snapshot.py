"""``Machine.snapshot()``: one consistent picture of everything a user can look at.

Taken without stopping the guest: device state is copied under the machine's device lock (so
sizes, bitmap and the event number agree), the guest's exported counters and host residency
are read around it. The monitor, the web page and scenario checks read only this (and
the event stream), never the machine's internals.

:func:`machine_state` is the one JSON form of a snapshot: a recording's keyframes are it, and
the web page's view (``webapp/view_model.py``) is it plus what only a live machine measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

from device.virtio_mem import VirtioMemOptions
from emulator.balloon_view import BalloonGuestView, read_balloon_view
from emulator.guest_view import GuestView, read_guest_view

if TYPE_CHECKING:
    from emulator.machine import Machine


@dataclass(frozen=True)
class DeviceSnapshot:
    id: str
    node: int
    addr: int
    region_size: int
    block_size: int
    nb_blocks: int
    usable_region_size: int
    plugged_size: int
    requested_size: int
    device_features: int
    driver_features: int
    unplugged_inaccessible: bool  # negotiated
    broken: bool
    bitmap: bytes  # one byte per block, 1 = plugged
    driver_state: str  # what the guest driver last reported
    resident: tuple[int, ...] | None  # host bytes resident per block (mincore), if asked for
    unplugged_policy: str = "shipped"
    """What a write to unplugged memory does: "shipped" (QEMU: goes through, the host backs
    it again), "dynamic-memslots" (QEMU 8.2: nothing mapped where nothing is plugged) or
    "x-rfc-write-protect" (the 2017 RFC: refused)."""
    memslot_size: int = 0  # bytes per memslot (the region, without dynamic memslots)
    memslots: bytes = b"\x01"  # one byte per memslot, 1 = mapped
    written_unplugged: bytes = b""  # one byte per block: holds data a rogue write left

    @property
    def plugged_blocks(self) -> int:
        return self.bitmap.count(1)

    @property
    def unplugged_resident(self) -> int | None:
        """Host bytes resident in unplugged blocks (None without residency): what rogue
        writes made the host back again."""
        if self.resident is None:
            return None
        return sum(r for r, plugged in zip(self.resident, self.bitmap, strict=False)
                   if not plugged)


@dataclass(frozen=True)
class DimmSnapshot:
    """A plugged pc-dimm (QEMU's ``query-memory-devices`` ``dimm`` entry)."""

    id: str
    path: str
    memdev: str
    addr: int
    size: int
    slot: int
    node: int
    hotplugged: bool
    resident: int | None = None  # host bytes resident, if asked for


@dataclass(frozen=True)
class NodeSnapshot:
    node_id: int
    cpus: tuple[int, ...]
    boot_ram: int
    plugged: int


@dataclass(frozen=True)
class BalloonSnapshot:
    """The balloon: the host's side (QEMU's numbers) and, once booted, the driver's view."""

    id: str
    ram_size: int  # QEMU's get_current_ram_size()
    num_pages: int  # the host's target: pages it wants in the balloon
    actual: int  # pages in the balloon, as the driver last wrote
    target_size: int  # ram_size - num_pages pages: what "balloon N" asked for
    guest_size: int  # ram_size - actual pages: QEMU's "actual" (info balloon)
    device_features: int
    driver_features: int
    deflate_on_oom: bool  # negotiated
    free_page_reporting: bool  # negotiated
    broken: bool
    driver_state: str  # what the guest driver last reported
    stats: dict[str, int]  # QEMU's guest-stats, by name
    stats_last_update: int
    stats_poll_interval: int
    inflated_pages: int  # pages the device discarded on inflate requests, since start
    deflated_pages: int
    ignored_pfns: int  # PFNs that named no RAM
    reported_bytes: int  # free page reporting: bytes discarded
    host_inflated: int  # pages the host counts as in the balloon now (vmemlab's record)
    host_inflated_resident: int | None  # of those, backed by host memory again (residency)
    guest: BalloonGuestView | None


@dataclass(frozen=True)
class MachineSnapshot:
    seq: int  # the last event number this picture includes
    runstate: str
    uptime_ns: int
    boot_ram_size: int
    cmdline: str
    guest_booted: bool
    guest_faults: int
    nodes: tuple[NodeSnapshot, ...]
    devices: tuple[DeviceSnapshot, ...]
    guest: GuestView | None
    host_rss: int
    boot_resident: int | None
    machine: str = "virt"  # -machine: the QEMU rules followed (emulator.machine_types)
    qemu_machine: str = "virt-7.2"  # what QEMU calls that machine type
    qemu_version: str = "7.2"
    balloon: BalloonSnapshot | None = None
    dimms: tuple[DimmSnapshot, ...] = ()  # by slot
    slots: int = 0
    ospm_status: tuple[dict[str, Any], ...] = ()  # query-acpi-ospm-status, DIMM slots
    backends: tuple[tuple[str, int, str | None], ...] = ()  # (id, size, used by)
    behaviour_model: str = ""
    pv_balloon: dict[str, Any] | None = None  # the behaviour model's host view (pv_balloon)

    def device(self, dev_id: str) -> DeviceSnapshot:
        for dev in self.devices:
            if dev.id == dev_id:
                return dev
        raise KeyError(dev_id)


# ------------------------------------------------------------------------------ JSON form

class NodeState(TypedDict):
    node_id: int
    boot_ram: int
    plugged: int  # bytes plugged by the node's devices


class DeviceState(TypedDict):
    node: int
    addr: int
    region_size: int
    block_size: int
    nb_blocks: int
    usable_region_size: int
    plugged_size: int
    requested_size: int
    driver_state: str
    unplugged_inaccessible: bool
    unplugged_policy: str  # what a write to unplugged memory does (DeviceSnapshot's doc)
    bitmap: str  # hex, one byte per block, 01 = plugged


D = TypeVar("D", bound=DeviceState)


class MachineState(TypedDict, Generic[D]):
    """What a replay can keep true from the event stream alone (``apply_event`` in
    ``scenarios/recording.py`` and ``static/recording.js`` move it forward)."""

    seq: int
    runstate: str
    cmdline: str
    guest_booted: bool
    guest_faults: int
    boot_ram_size: int
    machine: str  # -machine: virt, pc or q35 (the QEMU rules followed)
    qemu_machine: str  # what QEMU calls that machine type (virt-7.2, pc-i440fx-7.2, ...)
    nodes: list[NodeState]
    devices: dict[str, D]  # by device id, in the machine's order


def device_state(dev: DeviceSnapshot) -> DeviceState:
    return {
        "node": dev.node, "addr": dev.addr, "region_size": dev.region_size,
        "block_size": dev.block_size, "nb_blocks": dev.nb_blocks,
        "usable_region_size": dev.usable_region_size, "plugged_size": dev.plugged_size,
        "requested_size": dev.requested_size, "driver_state": dev.driver_state,
        "unplugged_inaccessible": dev.unplugged_inaccessible,
        "unplugged_policy": dev.unplugged_policy, "bitmap": dev.bitmap.hex(),
    }


def machine_state(snap: MachineSnapshot) -> MachineState[DeviceState]:
    """The snapshot as JSON-ready data: sizes, bitmaps, driver states, nodes."""
    return {
        "seq": snap.seq,
        "runstate": snap.runstate,
        "cmdline": snap.cmdline,
        "guest_booted": snap.guest_booted,
        "guest_faults": snap.guest_faults,
        "boot_ram_size": snap.boot_ram_size,
        "machine": snap.machine,
        "qemu_machine": snap.qemu_machine,
        "nodes": [{"node_id": n.node_id, "boot_ram": n.boot_ram, "plugged": n.plugged}
                  for n in snap.nodes],
        "devices": {d.id: device_state(d) for d in snap.devices},
    }


def host_rss() -> int:
    """This process's resident set size in bytes (VmRSS)."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def take_snapshot(machine: Machine, *, residency: bool = False) -> MachineSnapshot:
    """Device state under the machine's device lock (one instant, consistent with ``seq``);
    the guest's own view and the host residency are read around it, without stopping the
    guest: they are counters and page states that change continually anyway."""
    devices = []
    with machine.device_lock:
        seq = machine.bus.last_seq
        for dev in machine.devices.values():
            devices.append(DeviceSnapshot(
                id=dev.id, node=dev.node_id, addr=dev.addr, region_size=dev.region_size,
                block_size=dev.block_size, nb_blocks=dev.nb_blocks,
                usable_region_size=dev.usable_region_size, plugged_size=dev.plugged_size,
                requested_size=dev.requested_size, device_features=dev.device_features,
                driver_features=dev.driver_features,
                unplugged_inaccessible=dev.unplugged_inaccessible_negotiated,
                broken=dev.broken, bitmap=bytes(dev.bitmap),
                driver_state=machine.guest_states.get(dev.id, "absent"), resident=None,
                unplugged_policy=unplugged_policy(dev.options), memslot_size=dev.memslot_size,
                memslots=bytes(dev.memslots),
                written_unplugged=machine.board.stage2.written_blocks(dev),
            ))
        runstate = machine.runstate
        balloon = _balloon(machine)
        hotplug = machine.hotplug
        dimms = [DimmSnapshot(d.id, d.path, d.memdev, d.addr, d.size, d.slot, d.node,
                              d.hotplugged) for d in sorted(hotplug.dimms.values(),
                                                            key=lambda d: d.slot)]
        ospm = tuple(hotplug.acpi.ospm_status())
        backends = tuple((b.id, b.size, b.used_by) for b in hotplug.backends)
        memories = {d.memdev: hotplug.memory.get(d.memdev) for d in dimms}
    if balloon is not None:
        balloon = replace(balloon, host_inflated_resident=(
            machine.board.balloon_ram.inflated_resident() if residency else None),
            guest=read_balloon_view(machine.boot_ram, machine.balloon_view_addr,
                                    len(devices)))
    if residency:
        devices = [
            replace(d, resident=tuple(machine.regions[d.id].resident_per_block(d.block_size)))
            for d in devices
        ]
        measured = []
        for dimm in dimms:
            mem = memories.get(dimm.memdev)
            try:
                resident = mem.resident_bytes() if mem is not None else 0
            except (OSError, ValueError):  # ejected and unmapped meanwhile
                resident = 0
            measured.append(replace(dimm, resident=resident))
        dimms = measured
    nodes = tuple(
        NodeSnapshot(
            n.node_id, n.cpus, n.ram_size,
            sum(d.plugged_size for d in devices if d.node == n.node_id)
            + sum(d.size for d in dimms if d.node == n.node_id),
        )
        for n in machine.layout.nodes
    )
    pv_balloon = machine.board.pv_balloon
    guest = None
    if machine.view_addr:
        guest = read_guest_view(machine.boot_ram, machine.view_addr, len(devices))
    return MachineSnapshot(
        seq=seq, runstate=runstate, uptime_ns=machine.uptime_ns,
        boot_ram_size=machine.boot_ram.size, cmdline=machine.config.cmdline,
        guest_booted=machine.guest_booted, guest_faults=machine.guest_faults, nodes=nodes,
        devices=tuple(devices), guest=guest, host_rss=host_rss(),
        boot_resident=machine.boot_ram.resident_bytes() if residency else None,
        machine=machine.layout.machine.name, qemu_machine=machine.layout.machine.qemu_machine,
        qemu_version=machine.layout.machine.qemu_version,
        balloon=balloon,
        dimms=tuple(dimms), slots=machine.hotplug.slots, ospm_status=ospm,
        backends=backends, behaviour_model=machine.config.behaviour_model,
        pv_balloon=pv_balloon.stats(residency) if pv_balloon is not None else None,
    )


def _balloon(machine: Machine) -> BalloonSnapshot | None:
    """The balloon's host-side state (called under the device lock)."""
    dev = machine.balloon
    if dev is None:
        return None
    from device import virtio_balloon_protocol as b

    return BalloonSnapshot(
        id=dev.id, ram_size=dev.ram_size, num_pages=dev.num_pages, actual=dev.actual,
        target_size=dev.target_size, guest_size=dev.guest_size,
        device_features=dev.device_features, driver_features=dev.driver_features,
        deflate_on_oom=dev.negotiated(b.VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
        free_page_reporting=dev.negotiated(b.VIRTIO_BALLOON_F_REPORTING),
        broken=dev.broken, driver_state=machine.guest_states.get(dev.id, "absent"),
        stats=dict(dev.guest_stats()["stats"]), stats_last_update=dev.stats_last_update,
        stats_poll_interval=dev.stats_poll_interval, inflated_pages=dev.inflated_pages,
        deflated_pages=dev.deflated_pages, ignored_pfns=dev.ignored_pfns,
        reported_bytes=dev.reported_bytes,
        host_inflated=machine.board.balloon_ram.inflated_pages(),
        host_inflated_resident=None, guest=None,
    )


def unplugged_policy(options: VirtioMemOptions) -> str:
    """The name of what a write to unplugged memory does on a device with ``options``."""
    names = [name for name, on in (("dynamic-memslots", options.dynamic_memslots),
                                   ("x-rfc-write-protect", options.rfc_write_protect)) if on]
    return "+".join(names) or "shipped"
