"""The command layer HMP and QMP share: QEMU semantics, QEMU error classes and texts.

Every function takes a :class:`MonitorContext` (one per machine, see :func:`context_for`) and
returns plain data; HMP (``monitor.hmp``) formats it as text, QMP (``monitor.qmp``) as JSON.
Errors are :class:`MonitorError` with QEMU's class (``GenericError``, ``DeviceNotFound``,
``CommandNotFound``) and description. Only the machine's public API and its event bus are used.
"""

from __future__ import annotations

import shlex
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from control import (
    Alloc,
    BalloonRogue,
    ControlError,
    Dump,
    ErrorKind,
    Free,
    GuestOp,
    GuestReboot,
    MachineControl,
    Online,
    Outcome,
    Poweroff,
    Pressure,
    Read,
    RogueWrite,
    Stats,
    Touch,
    Verify,
    control_for,
)
from control.errors import ENGINE_ERRORS
from control.guest_ops import ONLINE_TYPES
from control.sizes import U64_MAX, json_to_uint64, parse_option_size
from device.errors import GuestMemoryError, VmemError
from monitor import balloon as balloon_qom

if TYPE_CHECKING:
    from emulator.machine import Machine
    from monitor.qmp_events import EventTranslator

T = TypeVar("T")
MiB = 1 << 20
PAGE = 4096
PERIPHERAL = "/machine/peripheral"
RUNNING_STATES = ("running",)
NEEDS_RESET = ("shutdown", "guest-panicked", "internal-error")


class MonitorError(Exception):
    """A command failed; ``cls`` is the QMP error class, ``desc`` QEMU's text."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


@dataclass
class MigrationInfo:
    status: str = ""  # "" = never migrated
    started: float = 0.0
    total_ms: int = 0
    transferred: int = 0
    total_ram: int = 0
    incoming: bool = False
    error: str = ""


@dataclass
class MonitorContext:
    """Per-machine monitor state shared by every HMP and QMP session of that machine."""

    machine: Machine
    lock: threading.RLock = field(default_factory=threading.RLock)
    migration: MigrationInfo = field(default_factory=MigrationInfo)
    quit_handler: Callable[[], None] | None = None
    last_x_format: tuple[str, int] = ("x", 4)
    _events: EventTranslator | None = None
    quitting: bool = False

    def run(self, fn: Callable[[], T]) -> T:
        """Run a command. Before the vCPU thread exists (``-S``, ``-incoming``) the machine
        runs calls on the caller's thread, so commands from several monitors are serialized
        here; afterwards the machine's own thread serializes them."""
        if self.machine.runstate in ("prelaunch", "inmigrate"):
            with self.lock:
                return fn()
        return fn()

    @property
    def control(self) -> MachineControl:
        """The machine's typed operations (``control.MachineControl``)."""
        return control_for(self.machine)

    def close(self) -> None:
        """Stop translating events for this machine (its QMP clients are gone)."""
        with self.lock:
            events, self._events = self._events, None
        if events is not None:
            events.close()

    def announce_shutdown(self, reason: str) -> None:
        """QEMU's SHUTDOWN event for a host-side end (``host-qmp-quit``, ``host-signal``),
        after every throttled event: the last size of every device is never lost."""
        events = self._events
        if events is not None:
            events.limiter.flush()
            events.emit_now("SHUTDOWN", {"guest": False, "reason": reason})

    @property
    def events(self) -> EventTranslator:
        """The machine's QMP event stream (created on first use, shared by all clients)."""
        with self.lock:
            if self._events is None:
                from monitor.qmp_events import EventTranslator

                self._events = EventTranslator(self.machine)
            return self._events


_contexts: weakref.WeakKeyDictionary[Any, MonitorContext] = weakref.WeakKeyDictionary()
_contexts_lock = threading.Lock()


def context_for(machine: Machine) -> MonitorContext:
    """The one :class:`MonitorContext` of ``machine`` (created on first use)."""
    with _contexts_lock:
        ctx = _contexts.get(machine)
        if ctx is None:
            ctx = MonitorContext(machine)
            _contexts[machine] = ctx
        return ctx


# ------------------------------------------------------------------------------ QOM model

@dataclass(frozen=True)
class QomObject:
    path: str
    type: str
    kind: str  # "pci" | "backend" | "memdev" | "container"
    dev_id: str = ""


def _memdev_name(machine: Machine, dev_id: str) -> str:
    for placed in machine.layout.devices:
        if placed.config.id == dev_id:
            return placed.config.memdev or dev_id
    return dev_id


def _objects(machine: Machine) -> dict[str, QomObject]:
    from monitor import dimm

    objs = {
        "/": QomObject("/", "container", "container"),
        "/machine": QomObject("/machine", "virt-7.2-machine", "container"),
        PERIPHERAL: QomObject(PERIPHERAL, "container", "container"),
        "/objects": QomObject("/objects", "container", "container"),
    }
    objs.update(dimm.qom_objects(machine))  # pc-dimms and every memory backend
    for dev_id in machine.devices:
        pci = f"{PERIPHERAL}/{dev_id}"
        objs[pci] = QomObject(pci, "virtio-mem-pci", "pci", dev_id)
        objs[pci + "/virtio-backend"] = QomObject(pci + "/virtio-backend", "virtio-mem",
                                                  "backend", dev_id)
        mem = "/objects/" + _memdev_name(machine, dev_id)
        objs[mem] = QomObject(mem, "memory-backend-ram", "memdev", dev_id)
    if machine.balloon is not None:
        for path, (qom_type, kind) in balloon_qom.objects(machine).items():
            objs[path] = QomObject(path, qom_type, kind, machine.balloon.id)
    return objs


def resolve(ctx: MonitorContext, path: str) -> QomObject:
    """QEMU ``object_resolve_path``: absolute, or a unique partial path (``vm0``)."""
    objs = _objects(ctx.machine)
    if path.startswith("/"):
        key = path.rstrip("/") or "/"
        if key in objs:
            return objs[key]
    elif path:
        hits = [o for p, o in objs.items() if p.endswith("/" + path.rstrip("/"))]
        if len(hits) == 1:
            return hits[0]
    raise MonitorError(f"Device '{path}' not found", "DeviceNotFound")


def resolve_device(ctx: MonitorContext, name: str) -> str:
    """A device id from ``vm0``, ``/machine/peripheral/vm0`` or ``.../vm0/virtio-backend``."""
    if name in ctx.machine.devices:
        return name
    try:
        obj = resolve(ctx, name)
    except MonitorError:
        obj = None
    if obj is None or obj.kind not in ("pci", "backend"):
        raise MonitorError(f"Device '{name}' not found", "DeviceNotFound")
    return obj.dev_id


# (name, type) in the order QEMU 7.2 lists them; values come from _pci_value/_backend_value
PCI_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("parent_bus", "link<bus>"), ("realized", "bool"),
    ("hotplugged", "bool"), ("hotpluggable", "bool"), ("failover_pair_id", "str"),
    ("romfile", "str"), ("addr", "int32"), ("romsize", "uint32"),
    ("x-pcie-lnksta-dllla", "bool"), ("rombar", "uint32"), ("x-pcie-extcap-init", "bool"),
    ("acpi-index", "uint32"), ("multifunction", "bool"), ("legacy-addr", "str"),
    ("migrate-extra", "bool"), ("ats", "bool"), ("x-ignore-backend-features", "bool"),
    ("x-pcie-pm-init", "bool"), ("aer", "bool"), ("x-pcie-flr-init", "bool"),
    ("x-pcie-lnkctl-init", "bool"), ("x-ats-page-aligned", "bool"), ("page-per-vq", "bool"),
    ("x-pcie-deverr-init", "bool"), ("virtio-pci-bus-master-bug-migration", "bool"),
    ("modern-pio-notify", "bool"), ("x-disable-pcie", "bool"),
    ("disable-legacy", "OnOffAuto"), ("disable-modern", "bool"), ("memaddr", "uint64"),
    ("indirect_desc", "bool"), ("virtio-pci-isr-virtio-mem[0]", "child<memory-region>"),
    ("virtio-pci-device-virtio-mem[0]", "child<memory-region>"), ("iommu_platform", "bool"),
    ("memdev", "link<memory-backend>"), ("use-disabled-flag", "bool"), ("event_idx", "bool"),
    ("node", "uint32"), ("virtio-pci-notify-pio-virtio-mem[0]", "child<memory-region>"),
    ("requested-size", "size"), ("bus master container[0]", "child<memory-region>"),
    ("x-disable-legacy-check", "bool"), ("any_layout", "bool"), ("queue_reset", "bool"),
    ("notify_on_empty", "bool"), ("packed", "bool"), ("block-size", "size"),
    ("prealloc", "bool"), ("use-started", "bool"),
    ("virtio-pci-notify-virtio-mem[0]", "child<memory-region>"),
    ("virtio-pci-common-virtio-mem[0]", "child<memory-region>"),
    ("unplugged-inaccessible", "OnOffAuto"), ("virtio-pci[0]", "child<memory-region>"),
    ("virtio-bus", "child<virtio-pci-bus>"), ("bus master[0]", "child<memory-region>"),
    ("size", "size"), ("virtio-backend", "child<virtio-mem>"),
    ("dynamic-memslots", "bool"), ("x-rfc-write-protect", "bool"),
)
# hw/virtio/virtio-mem.c: the property exists only "#if defined(VIRTIO_MEM_HAS_LEGACY_GUESTS)"
# (x86); QEMU 8.2 added dynamic-memslots; x-rfc-write-protect is vmemlab's (the 2017 RFC)
_X86_ONLY = frozenset({"unplugged-inaccessible"})
BACKEND_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("parent_bus", "link<bus>"), ("realized", "bool"),
    ("hotplugged", "bool"), ("hotpluggable", "bool"), ("queue_reset", "bool"),
    ("use-disabled-flag", "bool"), ("packed", "bool"), ("iommu_platform", "bool"),
    ("event_idx", "bool"), ("x-disable-legacy-check", "bool"), ("notify_on_empty", "bool"),
    ("any_layout", "bool"), ("use-started", "bool"), ("indirect_desc", "bool"),
    ("memdev", "link<memory-backend>"), ("node", "uint32"),
    ("unplugged-inaccessible", "OnOffAuto"), ("memaddr", "uint64"), ("legacy-memdev", "str"),
    ("prealloc", "bool"), ("block-size", "size"), ("size", "size"),
    ("requested-size", "size"), ("dynamic-memslots", "bool"), ("x-rfc-write-protect", "bool"),
)
MEMDEV_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("size", "int"), ("merge", "bool"), ("dump", "bool"),
    ("prealloc", "bool"), ("prealloc-threads", "uint32"), ("share", "bool"),
    ("reserve", "bool"), ("policy", "HostMemPolicy"), ("host-nodes", "int"),
    ("x-use-canonical-path-for-ramblock-id", "bool"),
)
_BACKEND_NAMES = {name for name, _ in BACKEND_PROPS} - {
    "type", "parent_bus", "realized", "hotplugged", "hotpluggable"}
_STATIC = {
    "realized": True, "hotplugged": False, "hotpluggable": True, "failover_pair_id": "",
    "romfile": "", "romsize": 4294967295, "x-pcie-lnksta-dllla": True, "rombar": 1,
    "x-pcie-extcap-init": True, "acpi-index": 0, "multifunction": False,
    "migrate-extra": True, "ats": False, "x-ignore-backend-features": False,
    "x-pcie-pm-init": True, "aer": False, "x-pcie-flr-init": True,
    "x-pcie-lnkctl-init": True, "x-ats-page-aligned": True, "page-per-vq": False,
    "x-pcie-deverr-init": True, "virtio-pci-bus-master-bug-migration": False,
    "modern-pio-notify": False, "x-disable-pcie": False, "disable-legacy": "on",
    "disable-modern": False, "indirect_desc": True, "iommu_platform": False,
    "use-disabled-flag": True, "event_idx": True, "x-disable-legacy-check": False,
    "any_layout": True, "queue_reset": True, "notify_on_empty": True, "packed": False,
    "prealloc": False, "use-started": True, "legacy-memdev": "",
}


def _props(ctx: MonitorContext, obj: QomObject) -> tuple[tuple[str, str], ...]:
    from monitor import dimm

    if obj.kind == "dimm":
        return dimm.DIMM_PROPS
    if obj.kind in ("pci", "backend"):
        props = PCI_PROPS if obj.kind == "pci" else BACKEND_PROPS
        options = ctx.machine.devices[obj.dev_id].options
        hidden = set() if ctx.machine.layout.machine.has_unplugged_inaccessible_property \
            else set(_X86_ONLY)
        # QEMU 7.2 has neither: listed (and readable) where the device uses them
        if not options.dynamic_memslots:
            hidden.add("dynamic-memslots")
        if not options.rfc_write_protect:
            hidden.add("x-rfc-write-protect")
        return tuple(p for p in props if p[0] not in hidden)
    if obj.kind == "memdev":
        return MEMDEV_PROPS
    if obj.kind.startswith("balloon-"):
        return balloon_qom.props(obj.kind)
    return (("type", "string"),)


def _type_of(ctx: MonitorContext, obj: QomObject, prop: str) -> str | None:
    return next((t for n, t in _props(ctx, obj) if n == prop), None)


def qom_list(ctx: MonitorContext, path: str) -> list[dict[str, str]]:
    obj = resolve(ctx, path)
    out = [{"name": n, "type": t} for n, t in _props(ctx, obj)]
    if obj.kind == "container":
        prefix = obj.path.rstrip("/") + "/"
        for p, o in _objects(ctx.machine).items():
            rest = p[len(prefix):]
            if p.startswith(prefix) and rest and "/" not in rest:
                out.append({"name": rest, "type": f"child<{o.type}>"})
    return out


def qom_get(ctx: MonitorContext, path: str, prop: str) -> Any:
    obj = resolve(ctx, path)
    ptype = _type_of(ctx, obj, prop)
    if ptype is None:
        raise MonitorError(f"Property '{obj.type}.{prop}' not found")
    if prop == "type":
        return obj.type
    if obj.kind.startswith("balloon-"):
        return balloon_qom.qom_get(ctx, obj.kind, prop)
    machine = ctx.machine
    if obj.kind == "dimm" or (obj.kind == "memdev" and obj.dev_id not in machine.devices):
        from monitor import dimm

        return (dimm.qom_get(ctx, obj, prop) if obj.kind == "dimm"
                else dimm.backend_value(ctx, obj, prop))
    if obj.kind == "memdev":
        dev = machine.devices[obj.dev_id]
        return {"size": dev.region_size, "merge": True, "dump": True, "prealloc": False,
                "prealloc-threads": 1, "share": False, "reserve": True, "policy": "default",
                "host-nodes": [], "x-use-canonical-path-for-ramblock-id": False}[prop]
    dev = machine.devices[obj.dev_id]
    pci = f"{PERIPHERAL}/{obj.dev_id}"
    if ptype.startswith("child<"):
        return f"{pci}/{prop}" if obj.kind == "pci" else f"{pci}/virtio-backend/{prop}"
    index = list(machine.devices).index(obj.dev_id)
    dynamic: dict[str, Any] = {
        "size": dev.plugged_size,
        "requested-size": dev.requested_size,
        "block-size": dev.block_size,
        "memaddr": dev.addr,
        "node": dev.node_id,
        "memdev": "/objects/" + _memdev_name(machine, obj.dev_id),
        # realize resolved "auto" (virtio_mem_has_shared_zeropage) to "on" or "off"
        "unplugged-inaccessible": "on" if dev.options.unplugged_inaccessible else "off",
        "dynamic-memslots": dev.options.dynamic_memslots,
        "x-rfc-write-protect": dev.options.rfc_write_protect,
        "parent_bus": "/machine/gpex-pcihost/pcie.0" if obj.kind == "pci"
        else f"{pci}/virtio-bus",
        "addr": (3 + index) * 8,
        "legacy-addr": f"{3 + index:02x}.0",
    }
    if prop in dynamic:
        return dynamic[prop]
    return _STATIC.get(prop, False)


def qom_set(ctx: MonitorContext, path: str, prop: str, value: Any, *, text: bool = False
            ) -> None:
    """``qom-set``: ``text=True`` for HMP's unparsed string, else a JSON value."""
    obj = resolve(ctx, path)
    ptype = _type_of(ctx, obj, prop)
    if ptype is None:
        raise MonitorError(f"Property '{obj.type}.{prop}' not found")
    if obj.kind.startswith("balloon-"):
        balloon_qom.qom_set(ctx, obj.kind, obj.path, prop, value, text=text)
        return
    if obj.kind == "memdev":
        raise MonitorError(f"cannot change property '{prop}' of {obj.path.rsplit('/', 1)[1]}")
    if obj.kind == "dimm":
        name = obj.path.rsplit("/", 1)[1]
        raise MonitorError(f"Attempt to set property '{prop}' on device '{name}' "
                           "(type 'pc-dimm') after it was realized")
    if obj.kind == "container" or prop == "type" or ptype.startswith("child<"):
        raise MonitorError(f"Property '{obj.type}.{prop}' is not writable")
    if prop == "size":
        raise MonitorError("Property 'virtio-mem.size' is not writable")
    if prop == "block-size":
        raise MonitorError("'block-size' cannot be changed")
    if prop == "memdev":
        raise MonitorError("Attempt to set link property 'memdev' on device '(null)' "
                           "(type 'virtio-mem') after it was realized")
    if prop == "requested-size":
        if text:
            try:
                size = parse_option_size(prop, str(value))
            except ValueError as err:
                raise MonitorError(str(err)) from None
        else:
            try:
                size = json_to_uint64(prop, value)
            except ValueError as err:
                raise MonitorError(str(err)) from None
        set_requested_size(ctx, obj.dev_id, size)
        return
    if prop in _BACKEND_NAMES:
        raise MonitorError(f"Attempt to set property '{prop}' on anonymous device "
                           "(type 'virtio-mem') after it was realized")
    if ptype.startswith("link<"):
        raise MonitorError(f"Property '{obj.type}.{prop}' is not writable")
    raise MonitorError(f"Attempt to set property '{prop}' on device '{obj.dev_id}' "
                       f"(type '{obj.type}') after it was realized")


def monitor_error(err: ControlError) -> MonitorError:
    """QEMU's error class for a control error's kind (the text is already QEMU's)."""
    classes = {ErrorKind.NOT_FOUND: "DeviceNotFound", ErrorKind.NOT_ACTIVE: "DeviceNotActive"}
    return MonitorError(err.message, classes.get(err.kind, "GenericError"))


def controlled(fn: Callable[[], T]) -> T:
    """Run a control operation; its ``ControlError`` becomes QEMU's error."""
    try:
        return fn()
    except ControlError as err:
        raise monitor_error(err) from None


def set_requested_size(ctx: MonitorContext, dev_id: str, size: int) -> None:
    if not 0 <= size <= U64_MAX:
        raise MonitorError("Parameter 'requested-size' expects uint64")
    controlled(lambda: ctx.control.resize(dev_id, size))


def virtio_mem_resize(ctx: MonitorContext, name: str, size_mb: int) -> None:
    """The 2017 RFC's ``virtio-mem ID SIZE_MB``."""
    dev_id = resolve_device(ctx, name)
    if size_mb < 0 or size_mb * MiB > U64_MAX:
        raise MonitorError(f"Value '{size_mb}' is out of range for parameter 'size'")
    set_requested_size(ctx, dev_id, size_mb * MiB)


# ------------------------------------------------------------------------------ queries

def query_memory_devices(ctx: MonitorContext) -> list[dict[str, Any]]:
    """Every memory device, sorted by address as QEMU lists them (DIMMs and virtio-mem)."""
    from monitor import dimm

    snap = ctx.machine.snapshot()
    out: list[dict[str, Any]] = []
    for dev in snap.devices:
        out.append({"type": "virtio-mem", "data": {
            "memdev": "/objects/" + _memdev_name(ctx.machine, dev.id),
            "memaddr": dev.addr,
            "block-size": dev.block_size,
            "size": dev.plugged_size,
            "node": dev.node,
            "max-size": dev.region_size,
            "requested-size": dev.requested_size,
            "id": dev.id,
        }})
    entries = [(d["data"]["memaddr"], d) for d in out] + dimm.dimm_entries(snap)
    return [entry for _addr, entry in sorted(entries, key=lambda e: e[0])]


def query_status(ctx: MonitorContext) -> dict[str, Any]:
    state = ctx.machine.runstate
    return {"status": state, "singlestep": False, "running": state == "running"}


def numa_info(ctx: MonitorContext) -> list[dict[str, Any]]:
    snap = ctx.machine.snapshot()
    return [{"node": n.node_id, "cpus": list(n.cpus), "size": n.boot_ram + n.plugged,
             "plugged": n.plugged} for n in snap.nodes]


def memory_size_summary(ctx: MonitorContext) -> dict[str, int]:
    snap = ctx.machine.snapshot()
    return {"base-memory": snap.boot_ram_size,
            "plugged-memory": sum(d.plugged_size for d in snap.devices)
            + sum(d.size for d in snap.dimms)}


REQUEST_STATUS = {
    "stopped-short": "vm-oom", "no-memory": "vm-oom", "retrying": "retrying",
    "broken": "failed", "failed": "failed",
    "no-space": "stalled (no space to add memory)",
}


def virtio_mem_info(ctx: MonitorContext, name: str) -> dict[str, Any]:
    """The RFC's ``info virtio-mem ID``: driver status, request status, block size."""
    dev_id = resolve_device(ctx, name)
    snap = ctx.machine.snapshot()
    dev = snap.device(dev_id)
    state = dev.driver_state
    if dev.broken:
        status = "broken"
    elif state in ("absent", "disabled"):
        status = "no guest driver"
    elif state == "probing":
        status = "initializing"
    elif state in ("failed", "broken"):
        status = state
    else:
        status = "ready"
    if state in REQUEST_STATUS:
        request = REQUEST_STATUS[state]
    elif dev.plugged_size == min(dev.requested_size, dev.region_size) and state == "idle":
        request = "finished"
    elif state in ("absent", "disabled"):
        request = "finished" if dev.plugged_size == dev.requested_size else "pending"
    else:
        request = "in progress"
    return {"id": dev_id, "status": status, "request-status": request,
            "driver-state": state, "block-size": dev.block_size,
            "requested-size": dev.requested_size, "size": dev.plugged_size}


# ------------------------------------------------------------------------------ run state

def stop(ctx: MonitorContext) -> None:
    controlled(ctx.control.pause)


def cont(ctx: MonitorContext) -> None:
    controlled(ctx.control.resume)


def system_reset(ctx: MonitorContext) -> None:
    controlled(ctx.control.reboot)


def quit_machine(ctx: MonitorContext) -> None:
    """QEMU ``quit``: emit SHUTDOWN (host-qmp-quit), then hand over to the quit handler."""
    with ctx.lock:
        if ctx.quitting:
            return
        ctx.quitting = True
    ctx.announce_shutdown("host-qmp-quit")
    if ctx.quit_handler is not None:
        ctx.quit_handler()
    else:
        threading.Thread(target=ctx.machine.close, daemon=True).start()


# ------------------------------------------------------------------------------ migration

def _exec_target(uri: str, direction: str) -> str:
    """The FILE of ``exec:cat > FILE`` (``out``) or ``exec:cat FILE`` (``in``)."""
    if not uri.startswith("exec:"):
        proto = uri.split(":", 1)[0] if ":" in uri else uri
        raise MonitorError(f"unknown migration protocol: {proto}")
    try:
        words = shlex.split(uri[5:])
    except ValueError as err:
        raise MonitorError(f"cannot parse '{uri}': {err}") from None
    if direction == "out":
        if len(words) == 3 and words[0] == "cat" and words[1] == ">":
            return words[2]
        if len(words) == 2 and words[0] == "cat" and words[1].startswith(">") and words[1][1:]:
            return words[1][1:]
        raise MonitorError("vmemlab runs no shell: use migrate \"exec:cat > FILE\"")
    if len(words) == 2 and words[0] == "cat":
        return words[1]
    raise MonitorError("vmemlab runs no shell: use -incoming \"exec:cat FILE\"")


def _total_ram(machine: Machine) -> int:
    return machine.layout.boot_ram_size + sum(d.region_size for d in machine.devices.values())


def migrate(ctx: MonitorContext, uri: str) -> None:
    """``migrate "exec:cat > FILE"``: save the machine; the source ends ``postmigrate``."""
    path = _exec_target(uri, "out")
    machine = ctx.machine
    if ctx.migration.status == "active":
        raise MonitorError("There's a migration process in progress")
    info = ctx.migration
    info.status, info.started, info.incoming, info.error = "active", time.time(), False, ""
    t0 = time.monotonic()
    try:
        with open(path, "wb") as stream:
            machine.save(stream)
    except (OSError, VmemError) as err:
        info.status, info.error = "failed", str(err)
        raise MonitorError(str(err)) from None
    info.total_ms = max(1, round((time.monotonic() - t0) * 1000))
    info.transferred = machine.last_migration_bytes
    info.total_ram = _total_ram(machine)
    info.status = "completed"


def incoming(ctx: MonitorContext, uri: str) -> None:
    """``-incoming "exec:cat FILE"``: load the stream into this (``inmigrate``) machine."""
    path = _exec_target(uri, "in")
    info = ctx.migration
    info.status, info.incoming = "active", True
    try:
        with open(path, "rb") as stream:
            ctx.machine.load_state(stream)
    except (OSError, VmemError) as err:
        info.status, info.error = "failed", str(err)
        raise MonitorError(str(err)) from None
    info.status, info.total_ms = "completed", 0


def query_migrate(ctx: MonitorContext) -> dict[str, Any]:
    info = ctx.migration
    if not info.status:
        return {}
    out: dict[str, Any] = {"status": info.status}
    if info.status == "failed":
        out["error-desc"] = info.error
        return out
    if info.incoming:
        if info.status == "completed":
            out["total-time"] = 0
        return out
    if info.status == "completed":
        normal = info.transferred // PAGE
        total_pages = info.total_ram // PAGE
        secs = info.total_ms / 1000
        out.update({
            "setup-time": 0, "downtime": min(info.total_ms, 10), "total-time": info.total_ms,
            "ram": {
                "transferred": info.transferred, "remaining": 0, "total": info.total_ram,
                "duplicate": max(0, total_pages - normal), "skipped": 0, "normal": normal,
                "normal-bytes": info.transferred, "dirty-sync-count": 1,
                "page-size": PAGE, "multifd-bytes": 0,
                "pages-per-second": round(normal / secs) if secs else 0,
                "precopy-bytes": info.transferred, "downtime-bytes": 0,
                "postcopy-bytes": 0, "dirty-pages-rate": 0,
                "mbps": round(info.transferred * 8 / 1e6 / secs, 2) if secs else 0,
            },
        })
    return out


# ------------------------------------------------------------------------------ memory

def read_memory(ctx: MonitorContext, addr: int, size: int) -> bytes:
    try:
        return ctx.machine.read_memory(addr, size)
    except GuestMemoryError as err:
        raise MonitorError(str(err)) from None
    except ValueError as err:
        raise MonitorError(f"Cannot access memory at 0x{addr:x}: {err}") from None


# ------------------------------------------------------------------------------ guest

GUEST_COMMANDS = ("alloc", "pin", "free", "touch", "verify", "dump", "rogue-write", "read",
                  "online", "stats", "reboot", "poweroff", "balloon-rogue", "pressure",
                  "grow", "suspend")  # the last two: monitor/extensions.py


def _number(word: str) -> int:
    try:
        return int(word, 0)
    except ValueError:
        raise MonitorError(f"invalid number '{word}'") from None


def parse_guest_op(ctx: MonitorContext, command: str, args: list[str]) -> GuestOp:
    """``guest alloc 64M unmovable vm0`` and friends, as a typed guest operation."""
    if command not in GUEST_COMMANDS:
        raise MonitorError(f"unknown guest command '{command}' (try: {', '.join(GUEST_COMMANDS)})")

    def target(word: str) -> str | None:
        if word == "any":
            return None
        if word != "boot" and ctx.machine.hotplug.by_id(word) is not None:
            return word  # a pc-dimm's memory
        return "boot" if word == "boot" else resolve_device(ctx, word)

    if command in ("alloc", "pin"):
        if not args:
            raise MonitorError(f"usage: guest {command} SIZE"
                               + (" [movable|unmovable]" if command == "alloc" else "")
                               + " [any|boot|DEVICE]")
        try:
            size = parse_option_size("size", args[0])
        except ValueError as err:
            raise MonitorError(str(err)) from None
        unmovable = command == "pin"
        huge = False
        where: str | None = None
        for word in args[1:]:
            if word in ("movable", "unmovable") and command == "alloc":
                unmovable = word == "unmovable"
            elif word == "huge" and command == "alloc":  # prefers RAM_HUGE (vmemlab's type)
                huge = True
            else:
                where = target(word[7:] if word.startswith("target=") else word)
        return Alloc(size, unmovable=unmovable, target=where, huge=huge)
    if command == "pressure":
        if not args:
            raise MonitorError("usage: guest pressure SIZE")
        try:
            return Pressure(parse_option_size("size", args[0]))
        except ValueError as err:
            raise MonitorError(str(err)) from None
    if command == "balloon-rogue":
        if not args:
            raise MonitorError("usage: guest balloon-rogue PAGES")
        return BalloonRogue(_number(args[0]))
    if command == "dump":
        # "--legacy": the RFC's / a pre-5.16 kdump that also reads unplugged memory
        legacy = "--legacy" in args
        rest = [word for word in args if word != "--legacy"]
        return Dump(resolve_device(ctx, rest[0]) if rest else None, legacy=legacy)
    if command == "online":
        # echo TYPE > /sys/devices/system/memory/memoryN/state, for each offline block
        device, kind = None, "online_movable"
        for word in args:
            if word in ONLINE_TYPES:
                kind = word
            elif ctx.machine.hotplug.by_id(word) is not None:
                device = word
            else:
                device = resolve_device(ctx, word)
        return Online(device, kind)
    ident = _number(args[0]) if args else 0
    if command == "free":
        return Free(ident)
    if command == "touch":
        return Touch(ident)
    if command == "verify":
        return Verify(ident)
    if command == "rogue-write":
        # OFFSET into DEVICE (default: the first); 0 lets the guest pick an unplugged block
        device = resolve_device(ctx, args[1]) if len(args) > 1 else None
        first = next(iter(ctx.machine.devices.values()), None)
        base = ctx.machine.devices[device].addr if device else (first.addr if first else 0)
        return RogueWrite(base + ident if ident else 0, device)
    if command == "read":
        return Read(ident)
    if command == "stats":
        return Stats()
    return GuestReboot() if command == "reboot" else Poweroff()


def guest_command(ctx: MonitorContext, command: str, args: list[str],
                  timeout: float = 60.0) -> Outcome:
    """Drive the guest workload (``guest alloc 64M unmovable vm0`` ...)."""
    op = parse_guest_op(ctx, command, args)
    return controlled(lambda: ctx.control.guest(op, timeout))


def guest_info(ctx: MonitorContext) -> dict[str, Any] | None:
    snap = ctx.machine.snapshot()
    view = snap.guest
    if view is None:
        return None
    devices = []
    for dev, gdev in zip(snap.devices, view.devices, strict=False):
        devices.append({"id": dev.id, "state": dev.driver_state, "view": gdev})
    dimms = [{"id": d.id, "slot": d.slot, "addr": d.addr, "size": d.size,
              "view": view.dimm(d.slot)} for d in snap.dimms]
    return {"view": view, "devices": devices, "cmdline": snap.cmdline,
            "uptime_ns": snap.uptime_ns, "faults": snap.guest_faults, "dimms": dimms}


def block_map(ctx: MonitorContext, name: str) -> dict[str, Any]:
    dev_id = resolve_device(ctx, name)
    snap = ctx.machine.snapshot()
    dev = snap.device(dev_id)
    return {"id": dev.id, "addr": dev.addr, "block-size": dev.block_size,
            "nb-blocks": dev.nb_blocks, "usable": dev.usable_region_size // dev.block_size,
            "bitmap": dev.bitmap, "plugged": dev.plugged_size,
            "requested": dev.requested_size, "state": dev.driver_state}


def describe_error(err: BaseException) -> MonitorError:
    """Turn any exception from the engine into a MonitorError (never a traceback)."""
    if isinstance(err, MonitorError):
        return err
    if isinstance(err, ControlError):
        return monitor_error(err)
    if isinstance(err, ENGINE_ERRORS):
        return monitor_error(ControlError.of(err))
    return MonitorError(f"internal error: {type(err).__name__}: {err}")
