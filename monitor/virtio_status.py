"""``info virtio``, ``info virtio-status PATH`` and their QMP twins, from the real transport.

QEMU 7.2's ``x-query-virtio`` / ``x-query-virtio-status`` (``hw/virtio/virtio.c``) and
``hmp_virtio_query`` / ``hmp_virtio_status``: the feature and status bits are decoded with
QEMU 7.2's tables, so a bit QEMU 7.2 has no name for is printed as ``unknown-features(…)``
(``VIRTIO_MEM_F_ACPI_PXM`` on a QEMU built with ACPI, as both transcripts show). The values
are the machine's own: *host features* are what the device offers on its virtio-mmio
transport, *guest features* what the guest driver accepted at FEATURES_OK, *status* the
transport's device-status byte. So ``VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`` is listed under
guest features exactly when the guest negotiated it.

vmemlab's transport offers fewer features than QEMU's virtio-pci: no ring features
(``VIRTIO_RING_F_INDIRECT_DESC``/``EVENT_IDX``, the virtqueue implements neither), no
legacy ``ANY_LAYOUT``/``NOTIFY_ON_EMPTY``, no ``VIRTIO_F_RING_RESET`` and no virtio-pci
``VIRTIO_F_BAD_FEATURE`` (bit 30): those lines and bits are simply absent here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device import virtio_mem_protocol as proto
from monitor.commands import PERIPHERAL, MonitorContext, MonitorError

VIRTIO_ID_MEM = 24
DEVICE_NAME = "virtio-mem"

# QEMU 7.2's virtio_transport_map, in table order (the decoded list comes out reversed)
TRANSPORT_FEATURES: tuple[tuple[int, str], ...] = (
    (24, "VIRTIO_F_NOTIFY_ON_EMPTY: Notify when device runs out of avail. descs. on VQ"),
    (27, "VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts"),
    (32, "VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)"),
    (33, "VIRTIO_F_IOMMU_PLATFORM: Device can be used on IOMMU platform"),
    (34, "VIRTIO_F_RING_PACKED: Device supports packed VQ layout"),
    (35, "VIRTIO_F_IN_ORDER: Device uses buffers in same order as made available by driver"),
    (36, "VIRTIO_F_ORDER_PLATFORM: Memory accesses ordered by platform"),
    (37, "VIRTIO_F_SR_IOV: Device supports single root I/O virtualization"),
    (28, "VIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported"),
    (29, "VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled"),
)
# virtio_mem_feature_map of a QEMU built with CONFIG_ACPI: ACPI_PXM has no entry there
MEM_FEATURES: tuple[tuple[int, str], ...] = (
    (proto.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
     "VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: Unplugged memory cannot be accessed"),
)
# virtio_config_status_map (status bits, not bit numbers)
STATUS_BITS: tuple[tuple[int, str], ...] = (
    (4, "VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready"),
    (8, "VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete"),
    (2, "VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device"),
    (0x40, "VIRTIO_CONFIG_S_NEEDS_RESET: Irrecoverable error, device needs reset"),
    (0x80, "VIRTIO_CONFIG_S_FAILED: Error in guest, device failed"),
    (1, "VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found"),
)


def _convert(table: tuple[tuple[int, str], ...], bitmap: int, is_status: bool
             ) -> tuple[list[str], int]:
    """QEMU's ``CONVERT_FEATURES``: names of the set bits (prepended, so reversed) and the
    bits left over."""
    names: list[str] = []
    for bit, text in table:
        mask = bit if is_status else 1 << bit
        if bitmap & mask:
            names.insert(0, text)
            bitmap ^= mask
    return names, bitmap


def decode_features(bitmap: int) -> dict[str, Any]:
    """``qmp_decode_features(VIRTIO_ID_MEM, bitmap)`` as its QAPI object."""
    transports, bitmap = _convert(TRANSPORT_FEATURES, bitmap, False)
    dev_features, bitmap = _convert(MEM_FEATURES, bitmap, False)
    out: dict[str, Any] = {"transports": transports, "dev-features": dev_features}
    if bitmap:
        out["unknown-dev-features"] = bitmap
    return out


def decode_status(bitmap: int) -> dict[str, Any]:
    """``qmp_decode_status``."""
    statuses, bitmap = _convert(STATUS_BITS, bitmap, True)
    out: dict[str, Any] = {"statuses": statuses}
    if bitmap:
        out["unknown-statuses"] = bitmap
    return out


def backend_path(dev_id: str) -> str:
    """The canonical QOM path of a device's virtio backend (what QEMU lists)."""
    return f"{PERIPHERAL}/{dev_id}/virtio-backend"


def query_virtio(ctx: MonitorContext) -> list[dict[str, str]]:
    """``x-query-virtio``: QEMU prepends each device it finds, so the last created is first
    (the balloon sits after the memory devices)."""
    found = [{"path": backend_path(dev_id), "name": DEVICE_NAME} for dev_id in ctx.machine.devices]
    balloon = ctx.machine.balloon
    if balloon is not None:
        found.append({"path": backend_path(balloon.id), "name": "virtio-balloon"})
    return list(reversed(found))


@dataclass(frozen=True)
class _Transport:
    status: int
    isr: int
    queue_sel: int
    host_features: int
    guest_features: int
    broken: bool


def _transport(ctx: MonitorContext, path: str) -> _Transport:
    machine = ctx.machine
    for index, (dev_id, device) in enumerate(machine.devices.items()):
        if backend_path(dev_id) == path:  # QEMU 7.2 compares canonical paths only
            with machine.device_lock:
                transport = machine.transports[index]
                return _Transport(transport.status, transport.interrupt_status,
                                  transport.queue_sel, device.device_features,
                                  device.driver_features, device.broken)
    raise MonitorError(f"Path {path} is not a VirtIODevice")


def query_virtio_status(ctx: MonitorContext, path: str) -> dict[str, Any]:
    """``x-query-virtio-status PATH`` (QAPI ``VirtioStatus``, fields in visit order)."""
    t = _transport(ctx, path)
    return {
        "name": DEVICE_NAME, "device-id": VIRTIO_ID_MEM, "vhost-started": False,
        "device-endian": "little",
        "guest-features": decode_features(t.guest_features),
        "host-features": decode_features(t.host_features),
        "backend-features": decode_features(0),
        "num-vqs": 1, "status": decode_status(t.status), "isr": t.isr,
        "queue-sel": t.queue_sel, "vm-running": ctx.machine.runstate == "running",
        "broken": t.broken, "disabled": False, "use-started": True,
        "started": bool(t.status & 4),  # virtio_set_status: started = DRIVER_OK
        "start-on-kick": False, "disable-legacy-check": False,
        "bus-name": "", "use-guest-notifier-mask": True,
    }


def fmt_virtio(devices: list[dict[str, str]]) -> str:
    """``hmp_virtio_query``."""
    if not devices:
        return "No VirtIO devices\n"
    return "".join(f"{d['path']} [{d['name']}]\n" for d in devices)


def _fmt_list(items: list[str]) -> str:
    return ",\n".join(f"\t{item}" for item in items) + "\n"


def _fmt_features(features: dict[str, Any]) -> str:
    """``hmp_virtio_dump_features`` (QEMU 7.2)."""
    out = _fmt_list(features["transports"])
    if features.get("dev-features"):
        out += _fmt_list(features["dev-features"])
    if "unknown-dev-features" in features:
        out += f"  unknown-features(0x{features['unknown-dev-features']:016x})\n"
    return out


def fmt_virtio_status(path: str, s: dict[str, Any]) -> str:
    """``hmp_virtio_status`` (QEMU 7.2), byte for byte."""

    def yes(key: str) -> str:
        return "true" if s[key] else "false"

    status = _fmt_list(s["status"]["statuses"])
    if "unknown-statuses" in s["status"]:
        status += f"  unknown-statuses(0x{s['status']['unknown-statuses']:016x})\n"
    return (
        f"{path}:\n"
        f"  device_name:             {s['name']} \n"
        f"  device_id:               {s['device-id']}\n"
        f"  vhost_started:           {yes('vhost-started')}\n"
        f"  bus_name:                {s['bus-name'] or '(null)'}\n"
        f"  broken:                  {yes('broken')}\n"
        f"  disabled:                {yes('disabled')}\n"
        f"  disable_legacy_check:    {yes('disable-legacy-check')}\n"
        f"  started:                 {yes('started')}\n"
        f"  use_started:             {yes('use-started')}\n"
        f"  start_on_kick:           {yes('start-on-kick')}\n"
        f"  use_guest_notifier_mask: {yes('use-guest-notifier-mask')}\n"
        f"  vm_running:              {yes('vm-running')}\n"
        f"  num_vqs:                 {s['num-vqs']}\n"
        f"  queue_sel:               {s['queue-sel']}\n"
        f"  isr:                     {s['isr']}\n"
        f"  endianness:              {s['device-endian']}\n"
        f"  status:\n{status}"
        f"  Guest features:\n{_fmt_features(s['guest-features'])}"
        f"  Host features:\n{_fmt_features(s['host-features'])}"
        f"  Backend features:\n{_fmt_features(s['backend-features'])}"
    )
