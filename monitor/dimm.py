"""Memory backends and pc-dimms in the monitor: QEMU 7.2's commands, output and errors.

HMP: ``object_add memory-backend-ram,id=d1,size=1G``, ``object_del d1``, ``device_add
pc-dimm,id=dimm1,memdev=d1``, ``device_del dimm1``, ``info memdev``; ``info memory-devices``
lists DIMMs and virtio-mem devices together, by address. QMP: ``object-add``, ``object-del``,
``device_add``, ``device_del``, ``query-acpi-ospm-status`` (``query-memdev``, with every
backend these make: ``monitor.info``);
``query-memory-devices`` gains ``dimm`` entries. ``qom-get``/``qom-list`` know a DIMM's
properties. The events ``ACPI_DEVICE_OST`` and ``DEVICE_DELETED`` are translated in
``monitor.qmp_events``. Texts and formats are those of reference/qemu-transcripts/12_dimm.txt.
The semantics are ``control.dimm_ops``; this module only translates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitor.commands import MonitorContext, MonitorError, QomObject, controlled

if TYPE_CHECKING:
    from emulator.machine import Machine
    from emulator.snapshot import DimmSnapshot, MachineSnapshot


#: qom-list of a pc-dimm, in QEMU 7.2's order
DIMM_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("parent_bus", "link<bus>"), ("realized", "bool"),
    ("hotplugged", "bool"), ("hotpluggable", "bool"), ("memdev", "link<memory-backend>"),
    ("node", "uint32"), ("addr", "uint64"), ("legacy-memdev", "str"), ("slot", "int32"),
    ("size", "uint64"),
)


def split_opts(text: str) -> list[tuple[str, str | None]]:
    from monitor.cmdline import split_opts as split

    return split(text)


def _typed(text: str, what: str) -> tuple[str, dict[str, Any]]:
    """``TYPE,key=value,...`` (QemuOpts with an implied first key) -> (TYPE, props)."""
    parts = split_opts(text)
    first, value = parts[0] if parts else ("", None)
    props: dict[str, Any] = {}
    kind = ""
    if value is None:
        kind = first
        parts = parts[1:]
    for key, val in parts:
        if key == what and not kind:
            kind = val or ""
            continue
        if val is None:
            raise MonitorError(f"Invalid parameter '{key}'")
        if key in props:
            raise MonitorError(f"Parameter '{key}' is set more than once")
        props[key] = val
    if not kind:
        raise MonitorError(f"Parameter '{what}' is missing")
    return kind, props


# ------------------------------------------------------------------------------ operations

def object_add(ctx: MonitorContext, qom_type: str, props: dict[str, Any]) -> None:
    controlled(lambda: ctx.control.dimms.object_add(qom_type, props))


def object_del(ctx: MonitorContext, backend_id: str) -> None:
    controlled(lambda: ctx.control.dimms.object_del(backend_id))


def device_add(ctx: MonitorContext, driver: str, props: dict[str, Any]) -> None:
    controlled(lambda: ctx.control.dimms.device_add(driver, props))


def device_del(ctx: MonitorContext, dev_id: str) -> None:
    """``device_del``: a DIMM is asked to leave; a virtio-mem device cannot be unplugged."""
    from monitor.commands import resolve_device

    machine = ctx.machine
    if machine.hotplug.by_id(dev_id) is None and dev_id not in machine.devices:
        try:  # /machine/peripheral/vm0 and friends name a virtio-mem device too
            dev_id = resolve_device(ctx, dev_id)
        except MonitorError:
            raise MonitorError(f"Device '{dev_id}' not found", "DeviceNotFound") from None
    controlled(lambda: ctx.control.dimms.device_del(dev_id))


def ospm_status(ctx: MonitorContext) -> list[dict[str, Any]]:
    return controlled(ctx.control.dimms.ospm_status)


# ------------------------------------------------------------------------------ queries

def dimm_entry(dimm: DimmSnapshot) -> dict[str, Any]:
    """A ``query-memory-devices`` item for a DIMM, keys in QEMU's order."""
    data: dict[str, Any] = {"memdev": f"/objects/{dimm.memdev}", "hotplugged": dimm.hotplugged,
                            "addr": dimm.addr, "hotpluggable": True, "size": dimm.size,
                            "slot": dimm.slot, "node": dimm.node}
    if dimm.id:
        data["id"] = dimm.id
    return {"type": "dimm", "data": data}


def dimm_entries(snap: MachineSnapshot) -> list[tuple[int, dict[str, Any]]]:
    """(address, entry) of every DIMM, for the merged, address-sorted list."""
    return [(d.addr, dimm_entry(d)) for d in snap.dimms]


def fmt_dimm(item: dict[str, Any]) -> str:
    d = item["data"]
    return (f'Memory device [dimm]: "{d.get("id", "")}"\n'
            f"  addr: 0x{d['addr']:x}\n"
            f"  slot: {d['slot']}\n"
            f"  node: {d['node']}\n"
            f"  size: {d['size']}\n"
            f"  memdev: {d['memdev']}\n"
            f"  hotplugged: {'true' if d['hotplugged'] else 'false'}\n"
            f"  hotpluggable: {'true' if d['hotpluggable'] else 'false'}\n")


def fmt_guest_dimms(dimms: list[dict[str, Any]], block_lines: Any) -> list[str]:
    """``info guest``: what the guest's ACPI memory hotplug driver made of each DIMM."""
    from control.sizes import format_mib

    out = []
    for d in dimms:
        g = d["view"]
        name = d["id"] or f"slot {d['slot']}"
        if g is None:
            out.append(f"{name} (slot {d['slot']}): not seen by the guest\n")
            continue
        source, status = g.last_ost
        line = (f"{name} (slot {d['slot']}, {format_mib(d['size'])} at 0x{d['addr']:x}): "
                f"{g.state}, last _OST source {source} status {status}")
        if g.attempts:
            line += f", eject attempts {g.attempts} ({g.failures} busy)"
        out.append(line + "\n")
        out.extend(f"  {text}\n" for text in block_lines(g))
        free = sum(u[2] for u in g.usage)
        movable = sum(u[0] for u in g.usage)
        kernel = sum(g.kernel)
        unmovable = sum(u[1] for u in g.usage) - kernel
        out.append(f"  {name} pages: {free} free, {movable} movable, {unmovable} unmovable, "
                   f"{kernel} kernel; memory maps {g.memmap_pages} pages (in ZONE_NORMAL)\n")
    return out


def fmt_balloon(b: Any) -> str:
    """``info guest``: the behaviour models' balloon driver."""
    from control.sizes import format_mib

    model = {1: "Xen", 2: "Hyper-V"}.get(b.model, "?")
    return (f"{model} behaviour model balloon: {b.state}, target {format_mib(b.target)}, "
            f"RAM {format_mib(b.ram_pages * 4096)}, ballooned {b.ballooned_pages} pages "
            f"({format_mib(b.ballooned_pages * 4096)})\n")


# ------------------------------------------------------------------------------ QOM

def qom_objects(machine: Machine) -> dict[str, QomObject]:
    """The DIMMs under /machine/peripheral and every backend under /objects."""
    hotplug = machine.hotplug
    objs: dict[str, QomObject] = {}
    for backend in hotplug.backend_list():
        objs[backend.path] = QomObject(backend.path, backend.qom_type, "memdev", backend.id)
    for dimm in hotplug.plugged():
        objs[dimm.path] = QomObject(dimm.path, "pc-dimm", "dimm", dimm.path)
    return objs


def qom_get(ctx: MonitorContext, obj: QomObject, prop: str) -> Any:
    """A DIMM property (``obj.kind == "dimm"``, ``obj.dev_id`` its QOM path)."""
    dimm = ctx.machine.hotplug.by_path(obj.dev_id)
    if dimm is None:
        raise MonitorError(f"Device '{obj.path}' not found", "DeviceNotFound")
    values = {"type": "pc-dimm", "parent_bus": "", "realized": True, "hotplugged": dimm.hotplugged,
              "hotpluggable": True, "memdev": f"/objects/{dimm.memdev}", "node": dimm.node,
              "addr": dimm.addr, "legacy-memdev": "", "slot": dimm.slot, "size": dimm.size}
    if prop not in values:
        raise MonitorError(f"Property 'pc-dimm.{prop}' not found")
    return values[prop]


def backend_value(ctx: MonitorContext, obj: QomObject, prop: str) -> Any:
    backend = ctx.machine.hotplug.backends.get(obj.dev_id)
    size = backend.size if backend is not None else 0
    return {"size": size, "merge": True, "dump": True, "prealloc": False,
            "prealloc-threads": 1, "share": False, "reserve": True, "policy": "default",
            "host-nodes": [], "x-use-canonical-path-for-ramblock-id": True}[prop]


# ------------------------------------------------------------------------------ HMP + QMP

def hmp_object_add(ctx: MonitorContext, a: dict[str, Any]) -> str:
    qom_type, props = _typed(a["object"], "qom-type")
    object_add(ctx, qom_type, props)
    return ""


def hmp_object_del(ctx: MonitorContext, a: dict[str, Any]) -> str:
    object_del(ctx, a["id"])
    return ""


def hmp_device_add(ctx: MonitorContext, a: dict[str, Any]) -> str:
    driver, props = _typed(a["device"], "driver")
    device_add(ctx, driver, props)
    return ""


def hmp_device_del(ctx: MonitorContext, a: dict[str, Any]) -> str:
    device_del(ctx, a["id"])
    return ""


def qmp_object_add(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in a.items() if k != "qom-type"}
    object_add(ctx, str(a["qom-type"]), props)
    return {}


def qmp_object_del(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    object_del(ctx, a["id"])
    return {}


def qmp_device_add(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in a.items() if k != "driver"}
    device_add(ctx, str(a["driver"]), props)
    return {}


def qmp_device_del(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    device_del(ctx, a["id"])
    return {}


QMP: dict[str, tuple[dict[str, tuple[str, bool]], Any]] = {
    "object-add": ({"qom-type": ("str", True), "id": ("str", True), "*": ("any", False)},
                   qmp_object_add),
    "object-del": ({"id": ("str", True)}, qmp_object_del),
    "device_add": ({"driver": ("str", True), "*": ("any", False)}, qmp_device_add),
    "device_del": ({"id": ("str", True)}, qmp_device_del),
    "query-acpi-ospm-status": ({}, lambda ctx, a: ospm_status(ctx)),
}
