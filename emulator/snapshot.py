"""``Machine.snapshot()``: one consistent picture of everything a user can look at.

Taken without stopping the guest: device state is copied under the machine's device lock (so
sizes, bitmap and the event number agree), the guest's exported counters and host residency
are read around it. The monitor, the web page and scenario checks read only this (and
the event stream), never the machine's internals.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

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

    @property
    def plugged_blocks(self) -> int:
        return self.bitmap.count(1)


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for dev in data["devices"]:
            dev["bitmap"] = dev["bitmap"].hex()
        return data


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
            ))
        runstate = machine.runstate
        hotplug = machine.hotplug
        dimms = [DimmSnapshot(d.id, d.path, d.memdev, d.addr, d.size, d.slot, d.node,
                              d.hotplugged) for d in sorted(hotplug.dimms.values(),
                                                            key=lambda d: d.slot)]
        ospm = tuple(hotplug.acpi.ospm_status())
        backends = tuple((b.id, b.size, b.used_by) for b in hotplug.backends)
        memories = {d.memdev: hotplug.memory.get(d.memdev) for d in dimms}
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
        dimms=tuple(dimms), slots=machine.hotplug.slots, ospm_status=ospm,
        backends=backends, behaviour_model=machine.config.behaviour_model,
        pv_balloon=pv_balloon.stats(residency) if pv_balloon is not None else None,
    )
