"""QEMU-style command line -> ``MachineConfig`` + monitor/migration options.

Accepts the subset of ``qemu-system-*`` options that describes a vmemlab machine (``-m``,
``-smp``, ``-numa``, ``-machine virt|pc|q35``, ``-object memory-backend-*``, ``-device
virtio-mem-pci``, ``-device virtio-balloon-pci``, ``-incoming``, ``-append``, ``-qmp``,
``-monitor``, ``-chardev``/``-mon``,
``-S``) and fails with QEMU 7.2's startup error texts, prefixed ``vmemlab: <the option>: ``
where QEMU writes ``qemu-system-x86_64: …``. ``-machine`` picks whose rules the device follows
(``emulator.machine_types``: arm ``virt`` by default, x86 ``pc``/``q35``). Options that make
sense only for a real PC (``-enable-kvm``, ``-kernel``, ``-cpu`` …) are accepted with a
one-line note, so the 2017 RFC's command line (its section V.1) can be pasted as is. The RFC's
``memory-backend-ram,size=4G,max-size=8G`` means "region 8G, initially requested 4G".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.sizes import U64_MAX, SizeError, parse_property_size, strtosz
from device.errors import ConfigError
from device.virtio_mem_types import check_memory_type
from emulator.config import (
    DEFAULT_BLOCK_SIZE,
    ID_HINT,
    BackendConfig,
    BalloonConfig,
    DimmConfig,
    MachineConfig,
    MemoryDeviceConfig,
    NumaNodeConfig,
    check_smp,
    id_wellformed,
)
from emulator.huge_pages import HUGE_PAGE_SIZES
from emulator.machine_types import PERSONALITIES, Personality, personality

PROG = "vmemlab"
MiB = 1 << 20


class CmdlineError(Exception):
    """A startup error; ``str()`` is the full line QEMU would print (without the newline)."""

    def __init__(self, message: str, option: str | None = None, hint: str = "") -> None:
        self.message = message
        self.option = option
        self.hint = hint  # QEMU's error_append_hint(): printed on the next line
        super().__init__(f"{PROG}: {option}: {message}" if option else f"{PROG}: {message}")


@dataclass
class MonitorSpec:
    protocol: str  # "qmp" | "hmp"
    address: str  # "unix:PATH" | "tcp:127.0.0.1:PORT" | "stdio" | "none"
    option: str = ""


@dataclass
class RunOptions:
    config: MachineConfig
    monitors: list[MonitorSpec] = field(default_factory=list)
    incoming: str | None = None
    start_paused: bool = False
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stdio_monitor: bool = True
    exit_on_shutdown: bool = True  # QEMU exits when the guest powers off (-no-shutdown: stays)


# options taking an argument that have no meaning in vmemlab (accepted with a note)
IGNORED_WITH_ARG = {
    "accel", "cpu", "kernel", "initrd", "serial", "display", "vga", "name",
    "D", "trace", "msg", "boot", "drive", "netdev", "net", "rtc", "bios", "L", "k", "uuid",
    "global", "icount", "watchdog-action", "action", "pidfile", "sandbox", "cdrom", "hda",
    "smbios", "fw_cfg", "d", "audiodev", "usbdevice", "parallel", "virtfs", "blockdev",
}
IGNORED_FLAGS = {
    "enable-kvm", "nodefaults", "nographic", "no-reboot", "daemonize",
    "no-hpet", "no-acpi", "snapshot", "full-screen", "no-user-config", "s",
}
KNOWN_WITH_ARG = {"m", "smp", "numa", "object", "device", "incoming", "append", "qmp",
                  "monitor", "chardev", "mon", "overcommit", "qmp-pretty", "machine", "M"}
KNOWN_FLAGS = {"S", "no-shutdown"}

DEVICE_PROPS = {"id", "memdev", "node", "requested-size", "block-size", "memaddr",
                "unplugged-inaccessible", "prealloc", "bus", "addr", "size",
                "x-rfc-shrink-on-reboot", "dynamic-memslots", "x-rfc-write-protect",
                "x-guest-requests", "x-memory-type"}
BALLOON_DRIVERS = ("virtio-balloon-pci", "virtio-balloon", "virtio-balloon-device")
BALLOON_PROPS = {"id", "deflate-on-oom", "free-page-reporting", "page-poison", "free-page-hint",
                 "guest-stats-polling-interval", "x-must-tell-host", "iothread",
                 "qemu-4-0-config-size", "bus", "addr", "disable-legacy", "disable-modern"}
OBJECT_PROPS = {"id", "size", "max-size", "prealloc", "share", "merge", "dump", "policy",
                "host-nodes", "reserve", "prealloc-threads", "x-use-canonical-path-for-ramblock-id",
                "seal", "hugetlb", "hugetlbsize", "mem-path", "discard-data", "align", "readonly"}


def split_opts(text: str) -> list[tuple[str, str | None]]:
    """QemuOpts ``a=b,c,d=e`` with ``,,`` as an escaped comma; a bare word has value None."""
    items: list[tuple[str, str | None]] = []
    buf, i = [], 0
    parts: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if i + 1 < len(text) and text[i + 1] == ",":
                buf.append(",")
                i += 2
                continue
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            items.append((key, value))
        else:
            items.append((part, None))
    return items


MAX_NUMBER_DIGITS = 20  # a u64; longer digit strings are refused before int() sees them
OPTS_VISITOR_RANGE_MAX = 65536  # QEMU's qapi/opts-visitor.c: the longest "a-b" range


def _uint(text: str | None) -> int | None:
    """Decimal digits as an int, or None (not a number, or more than a u64 could hold)."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > MAX_NUMBER_DIGITS or int(digits) > U64_MAX:
        return None
    return int(digits)


def _cpus(text: str, option: str) -> range:
    """``-numa node,cpus=A[-B]`` as QEMU's opts visitor reads a ``uint16`` list item."""
    lo_text, dash, hi_text = text.partition("-")
    lo, hi = _uint(lo_text), _uint(hi_text) if dash else _uint(lo_text)
    if lo is None or hi is None or hi < lo or hi - lo >= OPTS_VISITOR_RANGE_MAX:
        raise CmdlineError("Parameter 'cpus' expects a uint64 value or range", option)
    if hi > 0xFFFF:
        raise CmdlineError("Parameter 'cpus' expects uint16_t", option)
    return range(lo, hi + 1)


def _bool(name: str, value: str | None, option: str) -> bool:
    if value in (None, "on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise CmdlineError(f"Parameter '{name}' expects 'on' or 'off'", option)


def _size(name: str, value: str | None, option: str) -> int:
    try:
        return parse_property_size(name, value or "")
    except ValueError as err:
        raise CmdlineError(str(err), option) from None


@dataclass
class _Object:
    id: str
    size: int
    max_size: int | None
    option: str
    used_by: str | None = None
    shared_zeropage: bool = True  # private anonymous RAM (virtio_mem_has_shared_zeropage)
    page_size: int = 0  # a hugetlb backend's huge page size (0: host pages)


@dataclass
class _Device:
    option: str
    id: str
    memdev: str | None
    node: int
    requested_size: int | None
    block_size: int
    memaddr: int | None
    unplugged_inaccessible: str | None
    rfc_shrink: bool
    dynamic_memslots: bool = False
    rfc_write_protect: bool = False
    guest_requests: bool = False
    block_size_given: bool = False
    memory_type: str = ""


def _huge_page_size(qom_type: str, props: dict[str, str | None], option: str) -> int:
    """The huge page size of a hugetlb backend (0: host pages). vmemlab opens no file: a
    ``mem-path`` counts as hugetlbfs when it lies under a usual mount point."""
    if qom_type == "memory-backend-memfd" and \
            (props.get("hugetlb") or "off") in ("on", "yes", "true", "y"):
        size = _size("hugetlbsize", props.get("hugetlbsize") or "2M", option)
        if size not in HUGE_PAGE_SIZES:
            raise CmdlineError(f"hugetlbsize {size:#x}: vmemlab's host has 2 MiB and 1 GiB "
                               "huge pages only", option)
        return size
    path = props.get("mem-path") or ""
    if qom_type == "memory-backend-file" and (path.startswith(("/dev/hugepages", "/hugetlbfs"))
                                               or "hugetlbfs" in path):
        return 2 * MiB
    return 0


def _parse_monitor(value: str, protocol: str, option: str) -> MonitorSpec:
    from monitor.qmp import parse_address

    if protocol == "qmp" and value in ("stdio", "vc"):
        raise CmdlineError("QMP on stdio is not supported by vmemlab; use unix:PATH or "
                           "tcp:127.0.0.1:PORT", option)
    if value in ("stdio", "none", "vc"):
        return MonitorSpec(protocol, "none" if value == "vc" else value, option)
    opts = split_opts(value)
    target = opts[0][0] if opts[0][1] is None else f"{opts[0][0]}={opts[0][1]}"
    for key, val in opts[1:]:
        if key == "server" and val in (None, "on"):
            continue
        if key in ("nowait",) or (key == "wait" and val in ("off", "no")):
            continue
        if (key == "server" and val == "off") or key == "wait":
            raise CmdlineError("vmemlab monitors are always 'server,nowait'", option)
        if key in ("telnet", "pretty", "logfile", "logappend", "nodelay", "id"):
            continue
        raise CmdlineError(f"Invalid parameter '{key}'", option)
    try:
        addr = parse_address(target)
    except ValueError as err:
        raise CmdlineError(str(err), option) from None
    return MonitorSpec(protocol, str(addr), option)


def parse_args(argv: list[str]) -> RunOptions:
    """Parse QEMU-style ``argv`` (without the program name). Raises :class:`CmdlineError`."""
    cfg = MachineConfig(boot_ram=128 * MiB)
    opts = RunOptions(cfg)
    ram: int = 128 * MiB
    maxmem: int | None = None
    slots = 0
    smp = 1
    numa: list[tuple[str, int, list[int], str | None, int | None]] = []
    objects: dict[str, _Object] = {}
    devices: list[_Device] = []
    dimms: list[tuple[str, list[tuple[str, str | None]]]] = []  # (option, properties)
    chardevs: dict[str, str] = {}
    mem_lock = False
    smp_option: str | None = None
    max_cpus = 0
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            raise CmdlineError(f"Could not open '{arg}': vmemlab has no disk images", arg)
        name = arg.lstrip("-")
        if name in KNOWN_FLAGS:
            if name == "S":
                opts.start_paused = True
            else:
                opts.exit_on_shutdown = False
            i += 1
            continue
        if name in IGNORED_FLAGS:
            opts.notes.append(f"{arg}: ignored (no meaning in vmemlab)")
            i += 1
            continue
        if name not in KNOWN_WITH_ARG and name not in IGNORED_WITH_ARG:
            raise CmdlineError("invalid option", arg)
        if i + 1 >= len(argv):
            raise CmdlineError("requires an argument", arg)
        value = argv[i + 1]
        option = f"{arg} {value}"
        i += 2
        if name in IGNORED_WITH_ARG:
            opts.notes.append(f"{option}: ignored (no meaning in vmemlab)")
            continue
        if name in ("machine", "M"):
            _parse_machine(cfg, value, option, arg, opts)
            continue
        if name == "m":
            for j, (key, val) in enumerate(split_opts(value)):
                if j == 0 and val is None:
                    key, val = "size", key
                if key == "size":
                    try:
                        ram = strtosz(val or "", default_suffix="M")
                    except SizeError:
                        raise CmdlineError("Parameter 'size' expects a non-negative number "
                                           "below 2^64", option) from None
                elif key == "maxmem":
                    maxmem = _size("maxmem", val, option)
                elif key == "slots":
                    number = _uint(val)
                    if number is None:
                        raise CmdlineError("Parameter 'slots' expects uint64", option)
                    slots = number
                else:
                    raise CmdlineError(f"Invalid parameter '{key}'", option)
        elif name == "smp":
            parts = split_opts(value)
            total = None
            maxcpus = None
            topo = 1
            seen_topo = False
            for j, (key, val) in enumerate(parts):
                if j == 0 and val is None:
                    key, val = "cpus", key
                number = _uint(val)
                if number is None:
                    raise CmdlineError(f"Parameter '{key}' expects a number", option)
                if key in ("cpus",):
                    total = number
                elif key in ("sockets", "cores", "threads", "dies", "clusters", "books",
                             "drawers"):
                    topo *= number
                    seen_topo = True
                elif key == "maxcpus":
                    maxcpus = number
                else:
                    raise CmdlineError(f"Invalid parameter '{key}'", option)
            smp = total if total is not None else (topo if seen_topo else 1)
            if smp < 1:
                raise CmdlineError("Invalid CPU topology", option)
            smp_option, max_cpus = option, max(smp, maxcpus or 0)
        elif name == "numa":
            parts = split_opts(value)
            kind = parts[0][0] if parts and parts[0][1] is None else None
            if kind != "node":
                opts.notes.append(f"{option}: ignored (only '-numa node' is supported)")
                continue
            nodeid = len(numa)
            cpus: list[int] = []  # at most 65536 a range, checked against smp below
            memdev = None
            mem = None
            for key, val in parts[1:]:
                if key == "nodeid":
                    number = _uint(val)
                    if number is None or number > 0xFFFF:
                        raise CmdlineError("Parameter 'nodeid' expects uint16", option)
                    nodeid = number
                elif key == "cpus":
                    cpus += _cpus(val or "", option)
                elif key == "memdev":
                    memdev = val
                elif key == "mem":
                    mem = _size("mem", val, option)
                elif key in ("initiator",):
                    continue
                else:
                    raise CmdlineError(f"Invalid parameter '{key}'", option)
            if any(n[1] == nodeid for n in numa):
                raise CmdlineError(f"Duplicate NUMA nodeid: {nodeid}", option)
            numa.append((option, nodeid, cpus, memdev, mem))
        elif name == "object":
            parts = split_opts(value)
            qom_type = parts[0][0] if parts and parts[0][1] is None else ""
            if qom_type not in ("memory-backend-ram", "memory-backend-memfd",
                                "memory-backend-file"):
                opts.notes.append(f"{option}: ignored (only memory backends are used)")
                continue
            props = dict(parts[1:])
            page_size = _huge_page_size(qom_type, props, option)
            if qom_type != "memory-backend-ram" and not page_size:
                opts.notes.append(f"{option}: treated as memory-backend-ram (with its "
                                  "'unplugged-inaccessible=auto': no shared zero page)")
            if "id" in props:
                _check_id(props["id"], option)
            for key in props:
                if key not in OBJECT_PROPS:
                    raise CmdlineError(f"Property '{qom_type}.{key}' not found", option)
            oid = props.get("id")
            if not oid:
                raise CmdlineError("Parameter 'id' is missing", option)
            if oid in objects:
                raise CmdlineError(f"attempt to add duplicate property '{oid}' to object "
                                   "(type 'container')", option)
            if "size" not in props:
                raise CmdlineError("can't create backend with size 0", option)
            size = _size("size", props.get("size"), option)
            if size == 0:
                raise CmdlineError("can't create backend with size 0", option)
            max_size = None
            if "max-size" in props:
                max_size = _size("max-size", props.get("max-size"), option)
                if max_size < size:
                    raise CmdlineError("'max-size' must not be smaller than 'size'", option)
                opts.notes.append(
                    f"{option}: the 2017 RFC's form: a {max_size >> 20} MiB region with "
                    f"{size >> 20} MiB requested at start")
            if page_size and size % page_size and qom_type == "memory-backend-memfd":
                raise CmdlineError(f"failed to resize memfd to {size}: Invalid argument")
            if page_size:
                opts.notes.append(f"{option}: huge pages of {page_size >> 20} MiB, modelled: "
                                  "no host file or hugetlbfs pool is used (docs/extensions.md)")
            for key in ("prealloc", "share", "policy", "host-nodes") + (
                    () if page_size else ("hugetlb", "mem-path")):
                if key in props:
                    opts.notes.append(f"{option}: '{key}' ignored (anonymous memory, "
                                      "populated on demand)")
            # QEMU's virtio_mem_has_shared_zeropage(): only private anonymous memory of the
            # host page size (!qemu_ram_is_shared(rb) && qemu_ram_get_fd(rb) < 0)
            shared_zeropage = (qom_type == "memory-backend-ram"
                               and props.get("share", "off") in ("off", "no", "false")
                               and props.get("hugetlb", "off") in ("off", "no", "false"))
            objects[oid] = _Object(oid, size, max_size, option,
                                   shared_zeropage=shared_zeropage and not page_size,
                                   page_size=page_size)
        elif name == "device":
            parts = split_opts(value)
            driver = parts[0][0] if parts and parts[0][1] is None else ""
            if driver in BALLOON_DRIVERS:
                if cfg.balloon is not None:
                    raise CmdlineError("Only one balloon device is supported", option)
                cfg.balloon = _parse_balloon(driver, parts[1:], option)
                continue
            if driver == "pc-dimm":
                dimms.append((option, parts[1:]))
                continue
            if driver not in ("virtio-mem-pci", "virtio-mem", "virtio-mem-device"):
                opts.notes.append(f"{option}: ignored (vmemlab has only virtio-mem, "
                                  "virtio-balloon and pc-dimm devices)")
                continue
            devices.append(_parse_device(parts[1:], option, len(devices)))
        elif name == "incoming":
            if not value.startswith("exec:"):
                raise CmdlineError("vmemlab accepts only -incoming \"exec:cat FILE\"", option)
            opts.incoming = value
        elif name == "append":
            cfg.cmdline = value
        elif name in ("qmp", "qmp-pretty"):
            spec = _parse_monitor(value, "qmp", option)
            if spec.address != "none":
                opts.monitors.append(spec)
        elif name == "monitor":
            spec = _parse_monitor(value, "hmp", option)
            if spec.address in ("stdio", "none"):
                opts.stdio_monitor = spec.address == "stdio"
            else:
                opts.monitors.append(spec)
        elif name == "chardev":
            parts = split_opts(value)
            backend = parts[0][0] if parts and parts[0][1] is None else ""
            props = dict(parts[1:])
            cid = props.get("id")
            if not cid:
                raise CmdlineError("chardev: no id specified", option)
            _check_id(cid, option)
            if backend == "socket":
                if "path" in props:
                    target = f"unix:{props['path']}"
                else:
                    target = f"tcp:{props.get('host', '127.0.0.1')}:{props.get('port', '')}"
                chardevs[cid] = target
            elif backend == "stdio":
                chardevs[cid] = "stdio"
            else:
                chardevs[cid] = "none"
                opts.notes.append(f"{option}: ignored (no meaning in vmemlab)")
        elif name == "mon":
            props = dict(split_opts(value))
            chardev = props.get("chardev")
            if chardev is None or chardev not in chardevs:
                raise CmdlineError(f"chardev \"{chardev}\" not found", option)
            mode = props.get("mode", "readline")
            protocol = "qmp" if mode == "control" else "hmp"
            target = chardevs.pop(chardev)
            if target == "stdio":
                opts.stdio_monitor = protocol == "hmp"
            elif target != "none":
                opts.monitors.append(_parse_monitor(target, protocol, option))
        elif name == "overcommit":
            props = dict(split_opts(value))
            mem_lock = props.get("mem-lock") in ("on", None) and "mem-lock" in props
    for cid, target in chardevs.items():
        if target == "stdio":
            opts.notes.append(f"-chardev stdio,id={cid}: the guest console is not on stdio "
                              "(use 'info guest'); stdio is the monitor")
        elif target != "none":
            opts.notes.append(f"-chardev {target},id={cid}: not used by any -mon; ignored")

    machine = cfg.personality
    if smp_option is not None:
        try:  # QEMU checks max_cpus (maxcpus, else cpus) before sizing anything by it
            check_smp(max_cpus, machine)
        except ConfigError as err:
            raise CmdlineError(str(err)) from None
    cfg.boot_ram = ram
    if slots and maxmem is None:
        raise CmdlineError("slots specified but no max-size")
    cfg.maxmem = maxmem if maxmem is not None else ram
    cfg.slots = slots
    cfg.smp = smp
    opts.config = cfg
    _build_numa(cfg, numa, objects, ram, opts)
    _build_devices(cfg, devices, objects, opts, machine)
    if mem_lock and devices:
        raise CmdlineError("Incompatible with mlock", devices[0].option)
    _validate(cfg, devices)
    _build_dimms(cfg, dimms, objects)
    return opts


def _check_id(value: str | None, option: str) -> str:
    """QemuOpts/QOM ids (``qemu_opts_create``, ``user_creatable_add_type``): QEMU's text."""
    ident = "on" if value is None else value  # QemuOpts: a bare "id" means id=on
    if not id_wellformed(ident):
        raise CmdlineError("Parameter 'id' expects an identifier", option, ID_HINT)
    return ident


def _parse_device(parts: list[tuple[str, str | None]], option: str, index: int) -> _Device:
    dev = _Device(option=option, id=f"virtio-mem{index}", memdev=None, node=0,
                  requested_size=None, block_size=DEFAULT_BLOCK_SIZE, memaddr=None,
                  unplugged_inaccessible=None, rfc_shrink=False)
    for key, val in parts:
        if key not in DEVICE_PROPS:
            raise CmdlineError(f"Property 'virtio-mem-pci.{key}' not found", option)
        if key == "size":
            raise CmdlineError("Property 'virtio-mem.size' is not writable", option)
        if key == "id":
            dev.id = _check_id(val, option)
        elif key == "memdev":
            dev.memdev = val
        elif key == "node":
            number = _uint(val)
            if number is None or number > 0xFFFFFFFF:
                raise CmdlineError("Parameter 'node' expects uint32", option)
            dev.node = number
        elif key == "requested-size":
            dev.requested_size = _size("requested-size", val, option)
        elif key == "block-size":
            dev.block_size = _size("block-size", val, option)
            dev.block_size_given = True
        elif key == "memaddr":
            try:
                dev.memaddr = int(val or "", 0)
                if dev.memaddr < 0:
                    raise ValueError
            except ValueError:
                raise CmdlineError("Parameter 'memaddr' expects uint64", option) from None
        elif key == "unplugged-inaccessible":
            if val not in ("on", "off", "auto"):
                raise CmdlineError(
                    f"Parameter 'unplugged-inaccessible' does not accept value '{val}'", option)
            dev.unplugged_inaccessible = val
        elif key == "x-rfc-shrink-on-reboot":
            dev.rfc_shrink = _bool(key, val, option)
        elif key == "dynamic-memslots":
            dev.dynamic_memslots = _bool(key, val, option)
        elif key == "x-rfc-write-protect":
            dev.rfc_write_protect = _bool(key, val, option)
        elif key == "x-guest-requests":  # vmemlab's experiment (docs/extensions.md)
            dev.guest_requests = _bool(key, val, option)
        elif key == "x-memory-type":  # vmemlab's experiment of the RFC addendum's types
            try:
                check_memory_type(val or "")
            except ConfigError as err:
                raise CmdlineError(str(err), option) from None
            dev.memory_type = val or ""
    return dev


def _parse_machine(cfg: MachineConfig, value: str, option: str, arg: str,
                   opts: RunOptions) -> None:
    """``-machine [type=]virt|pc|q35[,rfc-shrink-on-reboot=on][,x-behaviour-model=xen|hyperv]``:
    the machine type decides whose virtio-mem rules apply (x86 or arm QEMU 7.2); other keys
    get a note."""
    rest = []
    for j, (key, val) in enumerate(split_opts(value)):
        if j == 0 and val is None and key not in ("rfc-shrink-on-reboot", "x-behaviour-model",
                                                  "x-persistent-suspend"):
            key, val = "type", key
        if key == "type":
            if val not in PERSONALITIES:
                raise CmdlineError("unsupported machine type", option,
                                   "Use -machine help to list supported machines")
            cfg.machine = personality(val or "").name
        elif key == "rfc-shrink-on-reboot":
            cfg.rfc_shrink_on_reboot = _bool(key, val, option)
        elif key == "x-persistent-suspend":  # offer VIRTIO_MEM_F_PERSISTENT_SUSPEND (1.4)
            cfg.persistent_suspend = _bool(key, val, option)
        elif key == "x-behaviour-model":  # vmemlab's models of the RFC's Xen / Hyper-V Q&A
            if val not in ("xen", "hyperv"):
                raise CmdlineError(f"Parameter 'x-behaviour-model' does not accept value "
                                   f"'{val}' (expected xen or hyperv)", option)
            cfg.behaviour_model = val
        else:
            rest.append(key if val is None else f"{key}={val}")
    if rest:
        opts.notes.append(f"{arg} {','.join(rest)}: ignored (no meaning in vmemlab)")


def _parse_balloon(driver: str, parts: list[tuple[str, str | None]], option: str
                   ) -> BalloonConfig:
    """``-device virtio-balloon-pci,id=ID[,deflate-on-oom=on][,free-page-reporting=on]``."""
    balloon = BalloonConfig(id="balloon0")
    iothread = None
    hint = False
    for key, val in parts:
        if key not in BALLOON_PROPS:
            raise CmdlineError(f"Property '{driver}.{key}' not found", option)
        if key == "id":
            balloon.id = _check_id(val, option)
        elif key == "deflate-on-oom":
            balloon.deflate_on_oom = _bool(key, val, option)
        elif key == "free-page-reporting":
            balloon.free_page_reporting = _bool(key, val, option)
        elif key == "page-poison":
            balloon.page_poison = _bool(key, val, option)
        elif key == "x-must-tell-host":
            balloon.must_tell_host = _bool(key, val, option)
        elif key == "free-page-hint":
            hint = _bool(key, val, option)
        elif key == "iothread":
            iothread = val
        elif key == "guest-stats-polling-interval":
            number = _uint(val.lstrip("+") if val else val)
            if val and val.startswith("-") and _uint(val[1:]) is not None:
                raise CmdlineError("timer value must be greater than zero", option)
            if number is None or number > (1 << 63) - 1:
                raise CmdlineError(f"Parameter '{key}' expects int64", option)
            if number > 0xFFFF_FFFF:
                raise CmdlineError("timer value is too big", option)
            balloon.stats_polling_interval = number
    if hint and iothread is None:
        raise CmdlineError("'free-page-hint' requires 'iothread' to be set", option)
    if hint:
        raise CmdlineError("free page hinting (a migration optimisation) is not modelled by "
                           "vmemlab", option)
    if iothread is not None:
        raise CmdlineError(f"Device '{iothread}' not found", option)
    return balloon


def _build_numa(cfg: MachineConfig, numa: list, objects: dict[str, _Object], ram: int,
                opts: RunOptions) -> None:
    if not numa:
        return
    nodes = []
    for option, nodeid, cpus, memdev, mem in numa:
        size = mem
        if memdev is not None:
            obj = objects.get(memdev)
            if obj is None:
                raise CmdlineError(f"Device '{memdev}' not found", option)
            obj.used_by = option
            size = obj.size
        nodes.append(NumaNodeConfig(nodeid, cpus, size, memdev or ""))
    if all(n.mem is None for n in nodes):
        opts.notes.append(
            f"{numa[0][0]}: no memdev: boot RAM split evenly between the nodes, as QEMU 2.x did "
            f"(QEMU 7.2 refuses: total memory for NUMA nodes (0x0) should equal RAM size "
            f"(0x{ram:x}))")
    elif any(n.mem is None for n in nodes):
        total = sum(n.mem or 0 for n in nodes)
        raise CmdlineError(f"total memory for NUMA nodes (0x{total:x}) should equal RAM size "
                           f"(0x{ram:x})")
    ids = sorted(n.node_id for n in nodes)
    if ids != list(range(len(nodes))):
        raise CmdlineError("NUMA node IDs must be 0..N-1 in vmemlab")
    for option, _nodeid, cpus, _memdev, _mem in numa:  # QEMU: the first one, in order
        bad = next((cpu for cpu in cpus if cpu >= cfg.smp), None)
        if bad is not None:
            raise CmdlineError(f"CPU index ({bad}) should be smaller than maxcpus "
                               f"({cfg.smp})", option)
    given = {cpu for n in nodes for cpu in n.cpus}
    spare = [cpu for cpu in range(cfg.smp) if cpu not in given]
    if spare:
        nodes[0].cpus = sorted(nodes[0].cpus + spare)
    cfg.nodes = sorted(nodes, key=lambda n: n.node_id)


def _build_devices(cfg: MachineConfig, devices: list[_Device], objects: dict[str, _Object],
                   opts: RunOptions, machine: Personality) -> None:
    for dev in devices:
        if dev.unplugged_inaccessible is not None and \
                not machine.has_unplugged_inaccessible_property:
            # the property exists only #if defined(VIRTIO_MEM_HAS_LEGACY_GUESTS) (x86)
            raise CmdlineError("Property 'virtio-mem-pci.unplugged-inaccessible' not found",
                               dev.option)
        if not dev.memdev:
            raise CmdlineError("'memdev' property must be set", dev.option)
        obj = objects.get(dev.memdev)
        if obj is None:
            raise CmdlineError(f"Device '{dev.memdev}' not found", dev.option)
        if obj.used_by is not None:
            raise CmdlineError(f"'memdev' property specifies a busy memdev: {dev.memdev}",
                               dev.option)
        obj.used_by = dev.option
        if obj.page_size and not dev.block_size_given:  # virtio_mem_default_block_size()
            dev.block_size = max(DEFAULT_BLOCK_SIZE, obj.page_size)
        if dev.block_size < obj.page_size:  # QEMU's realize, for a hugetlb backend
            raise CmdlineError("'block-size' property has to be at least the page size "
                               f"(0x{obj.page_size:x})", dev.option)
        region = obj.max_size if obj.max_size is not None else obj.size
        requested = dev.requested_size
        if requested is None:
            requested = obj.size if obj.max_size is not None else 0
        if dev.block_size < DEFAULT_BLOCK_SIZE and dev.block_size >= MiB and \
                not dev.block_size & (dev.block_size - 1):
            opts.warnings.append(f"{PROG}: {dev.option}: warning: 'block-size' property is "
                                 "smaller than the default block size (2 MiB)")
        if dev.rfc_shrink:
            cfg.rfc_shrink_on_reboot = True
        if dev.unplugged_inaccessible == "off" and not obj.shared_zeropage:
            opts.warnings.append(f"{PROG}: {dev.option}: warning: 'unplugged-inaccessible' "
                                 "property set to 'off' with a memdev that does not support "
                                 "the shared zeropage.")
        cfg.devices.append(MemoryDeviceConfig(
            id=dev.id, size=region, memdev=dev.memdev, node=dev.node,
            requested_size=requested, block_size=dev.block_size, memaddr=dev.memaddr,
            unplugged_inaccessible=dev.unplugged_inaccessible,
            shared_zeropage=obj.shared_zeropage, dynamic_memslots=dev.dynamic_memslots,
            rfc_write_protect=dev.rfc_write_protect, guest_requests=dev.guest_requests,
            page_size=obj.page_size, memory_type=dev.memory_type))
        if dev.memory_type == "ram-huge" and not obj.page_size:
            opts.warnings.append(f"{PROG}: {dev.option}: warning: 'x-memory-type' is 'ram-huge' "
                                 "but the memdev has no huge pages")


def _build_dimms(cfg: MachineConfig, dimms: list[tuple[str, list[tuple[str, str | None]]]],
                 objects: dict[str, _Object]) -> None:
    """``-device pc-dimm,...`` (cold-plugged DIMMs); backends no device maps stay available
    for ``device_add`` (``BackendConfig``)."""
    from control.dimm_ops import DimmControl
    from control.errors import ControlError

    for option, parts in dimms:
        props: dict[str, object] = {}
        for key, val in parts:
            if val is None:
                raise CmdlineError(f"Invalid parameter '{key}'", option)
            props[key] = val
        try:
            req = DimmControl.parse_request("pc-dimm", props)
        except ControlError as err:
            raise CmdlineError(err.message, option) from None
        if req.memdev is None:
            raise CmdlineError("'memdev' property must be set", option)
        obj = objects.get(req.memdev)
        if obj is None:
            raise CmdlineError(f"Device '{req.memdev}' not found", option)
        if obj.used_by is not None:
            raise CmdlineError(f"can't use already busy memdev: {req.memdev}", option)
        obj.used_by = option
        dev_id = req.id or f"dimm{len(cfg.dimms)}"
        cfg.dimms.append(DimmConfig(dev_id, req.memdev, obj.size, req.node, req.slot,
                                    req.addr))
        try:
            cfg.layout()
        except ConfigError as err:
            raise CmdlineError(str(err), option) from None
    cfg.backends = [BackendConfig(o.id, o.size) for o in objects.values() if o.used_by is None]


def _validate(cfg: MachineConfig, devices: list[_Device]) -> None:
    """Run the engine's QEMU checks and say which option each error belongs to."""
    from dataclasses import replace

    all_devices = list(cfg.devices)
    try:
        replace(cfg, devices=[]).layout()
    except ConfigError as err:
        raise CmdlineError(str(err)) from None
    for n in range(1, len(all_devices) + 1):
        try:
            replace(cfg, devices=all_devices[:n]).layout()
        except ConfigError as err:
            raise CmdlineError(str(err), devices[n - 1].option) from None


def help_text() -> str:
    return """usage: vmemlab run [options]

Start a vmemlab machine headless with the HMP monitor on stdio, QEMU style.

Machine (QEMU's syntax and error messages):
  -m SIZE[,slots=N,maxmem=SIZE]  boot RAM (default unit MiB), DIMM slots, the limit for
                            memory devices
  -device pc-dimm,id=ID,memdev=ID[,node=N][,slot=N][,addr=ADDR]   a cold-plugged DIMM
  -smp N | sockets=S,cores=C   number of CPUs (shown by 'info numa')
  -numa node,nodeid=N,cpus=A-B[,memdev=ID]
  -object memory-backend-ram,id=ID,size=SIZE[,max-size=SIZE]
                            max-size is the 2017 RFC's form: region max-size, requested size
  -machine virt|pc|q35[,rfc-shrink-on-reboot=on][,x-persistent-suspend=on]
                            whose rules the device follows: arm 'virt' (default) or x86
                            'pc'/'q35' (QEMU 7.2); rfc-shrink-on-reboot: the RFC's reboot
  -device virtio-mem-pci,id=ID,memdev=ID[,node=N][,requested-size=SIZE][,block-size=SIZE]
          [,memaddr=ADDR][,unplugged-inaccessible=on|off|auto (pc/q35 only)]
          [,dynamic-memslots=on (QEMU 8.2)][,x-rfc-write-protect=on (the RFC's design)]
          [,x-rfc-shrink-on-reboot=on][,x-guest-requests=on (vmemlab's experiment)]
          [,x-memory-type=ram|ram-huge (vmemlab's experiment)]
          [,memaddr=ADDR][,unplugged-inaccessible=on|off|auto][,x-rfc-shrink-on-reboot=on]
  -device virtio-balloon-pci,id=ID[,deflate-on-oom=on][,free-page-reporting=on]
          [,page-poison=on|off][,guest-stats-polling-interval=SECONDS][,x-must-tell-host=on]
  -machine rfc-shrink-on-reboot=on   the RFC's reboot behaviour instead of unplug-all
  -machine x-behaviour-model=xen|hyperv   the RFC's Xen / Hyper-V balloon comparisons
                            (behaviour models, not emulations; docs/compare.md)
  -append "OPTIONS"         guest boot options, e.g. modprobe.blacklist=virtio_mem,
                            memory_block_size=128M
  -incoming "exec:cat FILE" start from a saved machine (HMP: migrate "exec:cat > FILE")
  -S                        do not start the CPU (use 'cont')
  -no-shutdown              stay alive when the guest powers off (default: exit, as QEMU)

Monitors (unix sockets or 127.0.0.1 only):
  -qmp unix:PATH,server,nowait | tcp:127.0.0.1:PORT,server,nowait
  -monitor unix:PATH,server,nowait | tcp:127.0.0.1:PORT,server,nowait | stdio | none
  -chardev socket,id=ID,path=PATH,server,nowait -mon chardev=ID,mode=readline|control

Options with no meaning here (-enable-kvm, -cpu, -kernel, -initrd, -nodefaults, -serial,
-nographic, ...) are accepted with a one-line note.
With no options at all, vmemlab runs the reference machine:
  -m 1G,maxmem=4G -smp 2 -object memory-backend-ram,id=mem0,size=2G
  -device virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M
"""


DEFAULT_ARGS = ["-m", "1G,maxmem=4G", "-smp", "2", "-object",
                "memory-backend-ram,id=mem0,size=2G", "-device",
                "virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M"]
