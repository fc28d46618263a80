"""HMP, QEMU's human monitor: parser, formatter and ``run_hmp(machine, line) -> str``.

Argument parsing follows QEMU's ``monitor_parse_command`` (``args_type`` strings such as
``json:-j,path:s,property:s,value:S``) and its messages: ``unknown command: 'foo'``,
``qom-set: string expected`` + ``Try "help qom-set" for more information``. Command errors
print ``Error: <text>`` like ``hmp_handle_error``. Output formats are QEMU 7.2's, checked
against ``reference/qemu-transcripts``. The 2017 RFC's ``virtio-mem ID SIZE_MB`` and
``info virtio-mem ID`` and vmemlab's teaching commands (``guest``, ``info guest``,
``info virtio-mem-blocks``) use the same style.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control.sizes import format_mib
from monitor import balloon as b
from monitor import behaviour_model, dimm, pace
from monitor import commands as c
from monitor import extensions as ext
from monitor import info as mem_info
from monitor import virtio_status as vs
from monitor.commands import MonitorContext, MonitorError, context_for
from monitor.hmp_expr import ExprError, get_expr
from monitor.hmp_line import line_error

if TYPE_CHECKING:
    from emulator.machine import Machine

Handler = Callable[[MonitorContext, dict[str, Any]], str]
MAX_DUMP_BYTES = 64 * 1024


class ParseError(Exception):
    """An argument problem: printed as-is, followed by the ``Try "help CMD"`` hint."""

    def __init__(self, message: str, command: str = "") -> None:
        super().__init__(message)
        self.command = command


@dataclass(frozen=True)
class HmpCommand:
    name: str  # may be "stop|s" style aliases
    args_type: str
    params: str
    help: str
    handler: Handler
    #: offered to an anonymous visitor in the browser's monitor (see ``VISITOR``): it acts
    #: only on that visitor's own machine and touches no host file or process
    visitor_safe: bool = False

    @property
    def names(self) -> list[str]:
        return self.name.split("|")


@dataclass(frozen=True)
class Policy:
    """Which commands a monitor offers.

    The operator's monitors (stdio, sockets, QMP's human-monitor-command) get ``FULL``; the web
    page's monitor gets ``VISITOR``: whoever opens the page is anonymous, so ``migrate`` (it
    writes a host file) and ``quit`` (it closes the machine under the page) are not offered,
    ``help`` lists only what is, and a refused command answers one clear line.
    """

    where: str
    offers: Callable[[HmpCommand], bool]


FULL = Policy("monitor", lambda cmd: True)
VISITOR = Policy("browser monitor", lambda cmd: cmd.visitor_safe)


class NotOffered(Exception):
    """A command that exists but that the policy does not offer."""


# ------------------------------------------------------------------------------ formatters

def fmt_memory_devices(devs: list[dict[str, Any]]) -> str:
    out = []
    for item in devs:
        if item["type"] == "dimm":
            out.append(dimm.fmt_dimm(item))
            continue
        d = item["data"]
        out.append(
            f'Memory device [{item["type"]}]: "{d["id"]}"\n'
            f"  memaddr: 0x{d['memaddr']:x}\n"
            f"  node: {d['node']}\n"
            f"  requested-size: {d['requested-size']}\n"
            f"  size: {d['size']}\n"
            f"  max-size: {d['max-size']}\n"
            f"  block-size: {d['block-size']}\n"
            f"  memdev: {d['memdev']}\n"
        )
    return "".join(out)


def fmt_numa(nodes: list[dict[str, Any]]) -> str:
    out = [f"{len(nodes)} nodes\n"]
    for n in nodes:
        cpus = "".join(f" {cpu}" for cpu in n["cpus"])
        out.append(f"node {n['node']} cpus:{cpus}\n")
        out.append(f"node {n['node']} size: {n['size'] >> 20} MB\n")
        out.append(f"node {n['node']} plugged: {n['plugged'] >> 20} MB\n")
    return "".join(out)


def fmt_status(status: dict[str, Any]) -> str:
    text = "VM status: " + ("running" if status["running"] else "paused")
    if not status["running"] and status["status"] != "paused":
        text += f" ({status['status']})"
    return text + "\n"


MIGRATE_GLOBALS = (
    "globals:\nstore-global-state: on\nonly-migratable: off\nsend-configuration: on\n"
    "send-section-footer: on\ndecompress-error-check: on\nclear-bitmap-shift: 18\n"
)


def fmt_migrate(info: dict[str, Any]) -> str:
    out = [MIGRATE_GLOBALS]
    if not info:
        return out[0]
    status = info["status"]
    if status == "failed" and info.get("error-desc"):
        out.append(f"Migration status: failed ({info['error-desc']})\n")
        return "".join(out)
    out.append(f"Migration status: {status}\n")
    if "total-time" in info:
        out.append(f"total time: {info['total-time']} ms\n")
    if "downtime" in info:
        out.append(f"downtime: {info['downtime']} ms\n")
    if "setup-time" in info:
        out.append(f"setup: {info['setup-time']} ms\n")
    ram = info.get("ram")
    if ram:
        kb = 1024
        out.append(
            f"transferred ram: {ram['transferred'] // kb} kbytes\n"
            f"throughput: {ram['mbps']:.2f} mbps\n"
            f"remaining ram: {ram['remaining'] // kb} kbytes\n"
            f"total ram: {ram['total'] // kb} kbytes\n"
            f"duplicate: {ram['duplicate']} pages\n"
            f"skipped: {ram['skipped']} pages\n"
            f"normal: {ram['normal']} pages\n"
            f"normal bytes: {ram['normal-bytes'] // kb} kbytes\n"
            f"dirty sync count: {ram['dirty-sync-count']}\n"
            f"page size: {ram['page-size'] // kb} kbytes\n"
            f"multifd bytes: {ram['multifd-bytes'] // kb} kbytes\n"
            f"pages-per-second: {ram['pages-per-second']}\n"
            f"precopy ram: {ram['precopy-bytes'] // kb} kbytes\n"
            f"downtime ram: {ram['downtime-bytes'] // kb} kbytes\n"
        )
    return "".join(out)


def fmt_virtio_mem(info: dict[str, Any]) -> str:
    return (f"Status: {info['status']}\n"
            f"Request status: {info['request-status']}\n"
            f"Page size: {info['block-size']} bytes\n")


def fmt_block_map(m: dict[str, Any], width: int = 64, max_chars: int = 1024) -> str:
    nb, bitmap, bs = m["nb-blocks"], m["bitmap"], m["block-size"]
    per = 1
    while nb > per * max_chars:
        per *= 2
    usable = m["usable"]
    head = (f"{m['id']}: {nb} blocks of {format_mib(bs)} at 0x{m['addr']:x}, "
            f"usable {usable}, plugged {m['plugged'] // bs} ({format_mib(m['plugged'])}), "
            f"requested {format_mib(m['requested'])}, guest driver {m['state']}\n")
    unit = "1 block" if per == 1 else f"{per} blocks ({format_mib(per * bs)})"
    legend = ("legend: # plugged  . unplugged  _ outside the usable region"
              + ("  + partly plugged" if per > 1 else "") + f"  [one char = {unit}]\n")
    chars = []
    for first in range(0, nb, per):
        chunk = bitmap[first:first + per]
        plugged = chunk.count(1)
        if plugged == len(chunk):
            chars.append("#")
        elif plugged:
            chars.append("+")
        elif first >= usable:
            chars.append("_")
        else:
            chars.append(".")
    rows = []
    for i in range(0, len(chars), width):
        rows.append(f"0x{m['addr'] + i * per * bs:016x} {''.join(chars[i:i + width])}\n")
    return head + legend + "".join(rows)


def fmt_guest(info: dict[str, Any] | None) -> str:
    if info is None:
        return "guest: not booted yet (no guest view exported)\n"
    v = info["view"]
    policy = v.online_policy
    if policy == "auto-movable":
        policy += f" (auto_movable_ratio {v.auto_movable_ratio})"
    out = [
        f"guest uptime: {info['uptime_ns'] / 1e9:.2f} s, cmdline: '{info['cmdline']}'\n",
        f"memory hotplug: memhp_default_state={v.online_type}, online_policy={policy}\n",
        f"boot RAM: {v.boot_pages} pages ({format_mib(v.boot_pages * 4096)}): "
        f"{v.boot_free} free, {v.boot_movable} movable, {v.boot_unmovable} unmovable, "
        f"{v.boot_kernel} kernel\n",
    ]
    if v.allocations:
        out.append("allocations:\n")
        for a in v.allocations:
            kind = "unmovable" if a.unmovable else "movable"
            where = {0xFF: "any", 0xFE: "boot"}.get(a.target)
            if where is None and a.target >= 0x1000:  # abi.TARGET_DIMM + slot
                where = f"dimm slot {a.target - 0x1000}"
            if where is None:
                devs = [d["id"] for d in info["devices"]]
                where = devs[a.target] if a.target < len(devs) else str(a.target)
            out.append(f"  {a.id}: {a.pages} pages ({format_mib(a.pages * 4096)}) {kind} "
                       f"target {where}\n")
    else:
        out.append("allocations: none\n")
    for d in info["devices"]:
        g = d["view"]
        if g is None:
            out.append(f"{d['id']}: no driver view\n")
            continue
        out.append(
            f"{d['id']}: driver {g.state}, plugged {format_mib(g.plugged_size)} of "
            f"{format_mib(g.requested_size)} requested, memory block "
            f"{format_mib(g.memory_block_size)} ({g.memory_blocks_added} added), "
            f"requests {g.requests} (ack {g.acks}, nack {g.nacks}, busy {g.busies}, "
            f"error {g.errors}), pages migrated {g.migrated_pages}\n")
        out.extend(f"  {line}\n" for line in _memory_block_lines(g))
        out.append(_page_line(d["id"], g))
    out.extend(dimm.fmt_guest_dimms(info.get("dimms", []), _memory_block_lines))
    if v.pv_balloon is not None:
        out.append(dimm.fmt_balloon(v.pv_balloon))
    out.append(f"guest faults: {info['faults']}\n")
    return "".join(out)


def _memory_block_lines(g: Any) -> list[str]:
    """Added memory blocks in runs, like ``/sys/devices/system/memory/memoryN`` (state, zone)."""
    runs: list[tuple[int, int, str]] = []
    for mb in g.memory_blocks:
        if mb.zone == "none":
            continue
        what = "offline" if mb.zone == "offline" else f"online zones={mb.zone}"
        last = mb.id + mb.span - 1
        if runs and runs[-1][2] == what and runs[-1][1] == mb.id - 1:
            runs[-1] = (runs[-1][0], last, what)
        else:
            runs.append((mb.id, last, what))
    return [f"memory{a}: {what}" if a == b else f"memory{a}..{b}: {what}"
            for a, b, what in runs]


def _page_line(dev_id: str, g: Any) -> str:
    free = sum(u[2] for u in g.usage)
    movable = sum(u[0] for u in g.usage)
    kernel = sum(g.kernel)
    unmovable = sum(u[1] for u in g.usage) - kernel
    line = (f"  {dev_id} pages: {free} free, {movable} movable, {unmovable} unmovable, "
            f"{kernel} kernel; memory maps {g.memmap_pages} pages "
            f"({format_mib(g.memmap_pages * 4096)})")
    if g.offline_size:
        line += (f"; {format_mib(g.offline_size)} added but offline (threshold "
                 f"{format_mib(g.offline_threshold)})")
    return line + "\n"


# ------------------------------------------------------------------------------ x / xp

_FMT = re.compile(r"/(\d*)([a-z]*)$")


def _parse_format(ctx: MonitorContext, text: str | None) -> tuple[int, str, int]:
    fmt, size = ctx.last_x_format
    count = 1
    if text:
        m = _FMT.match(text)
        if m is None:
            raise ParseError(f"invalid char in format: '{text[1:2]}'")
        if m.group(1):
            count = int(m.group(1))
        explicit_size = False
        for ch in m.group(2):
            if ch in "oxudcai":
                fmt = ch
            elif ch in "bhwg":
                size = {"b": 1, "h": 2, "w": 4, "g": 8}[ch]
                explicit_size = True
            else:
                raise ParseError(f"invalid char in format: '{ch}'")
        if fmt == "c" and not explicit_size:
            size = 1
        if fmt == "a":
            size = 8
    ctx.last_x_format = (fmt, size)
    return count, fmt, size


def _dump(ctx: MonitorContext, args: dict[str, Any], physical: bool) -> str:
    count, fmt, wsize = _parse_format(ctx, args.get("fmt"))
    if fmt == "i":
        raise MonitorError("instruction dump ('i') is not supported by vmemlab")
    if fmt == "c":
        wsize = 1
    addr = args["addr"]
    length = min(count * wsize, MAX_DUMP_BYTES)
    data = c.read_memory(ctx, addr, length) if length else b""
    line_size = 8 if wsize == 1 else 16
    digits = {"o": -(-wsize * 8 // 3), "u": -(-wsize * 80 // 33),
              "d": -(-wsize * 80 // 33)}.get(fmt, wsize * 2)
    out = []
    for off in range(0, length, line_size):
        line = [f"{addr + off:016x}:"]
        for i in range(off, min(off + line_size, length), wsize):
            chunk = data[i:i + wsize]
            if len(chunk) < wsize:
                break
            v = int.from_bytes(chunk, "little")
            if fmt == "o":
                line.append(" " + (f"0{v:o}" if v else "0").rjust(digits))
            elif fmt == "u":
                line.append(" " + str(v).rjust(digits))
            elif fmt == "d":
                sv = v - (1 << (wsize * 8)) if v >> (wsize * 8 - 1) else v
                line.append(" " + str(sv).rjust(digits))
            elif fmt == "c":
                line.append(" " + _printc(v))
            else:
                line.append(f" 0x{v:0{digits}x}")
        out.append("".join(line) + "\n")
    return "".join(out)


def _printc(v: int) -> str:
    special = {39: "\\'", 92: "\\\\", 10: "\\n", 13: "\\r"}
    if v in special:
        return f"'{special[v]}'"
    return f"'{chr(v)}'" if 32 <= v <= 126 else f"'\\x{v:02x}'"


# ------------------------------------------------------------------------------ handlers

def _h_qom_get(ctx: MonitorContext, a: dict[str, Any]) -> str:
    value = c.qom_get(ctx, a["path"], a["property"])
    if isinstance(value, dict):  # qobject_to_json_pretty(): QEMU pretty-prints objects
        return json.dumps(value, indent=4) + "\n"
    return json.dumps(value) + "\n"


def _h_qom_set(ctx: MonitorContext, a: dict[str, Any]) -> str:
    if a.get("json"):
        try:
            value = json.loads(a["value"])
        except ValueError:
            raise MonitorError(f"JSON parse error, invalid keyword '{a['value']}'") from None
        c.qom_set(ctx, a["path"], a["property"], value)
    else:
        c.qom_set(ctx, a["path"], a["property"], a["value"], text=True)
    return ""


def _h_qom_list(ctx: MonitorContext, a: dict[str, Any]) -> str:
    path = a.get("path")
    if not path:
        return "/\n"  # QEMU prints the root when no path is given
    return "".join(f"{p['name']} ({p['type']})\n" for p in c.qom_list(ctx, path))


def _h_info(ctx: MonitorContext, a: dict[str, Any]) -> str:
    return help_text("info", FULL)


def _h_help(ctx: MonitorContext, a: dict[str, Any]) -> str:
    return help_text(a.get("name"), FULL)


def help_text(name: str | None, policy: Policy) -> str:
    """``help [name]`` as the policy sees it: only the commands it offers are listed."""
    commands = [cmd for cmd in COMMANDS if policy.offers(cmd)]
    infos = [cmd for cmd in INFO_COMMANDS if policy.offers(cmd)]
    if not name:
        return _help_lines(commands, "")
    if name == "info":
        return _help_lines(infos, "info ")
    words = name.split()
    if words[0] == "info" and len(words) > 1:
        cmd = _lookup(infos, words[1])
        return _help_lines([cmd], "info ") if cmd else ""
    cmd = _lookup(commands, words[0])
    return _help_lines([cmd], "") if cmd else ""


def _help_lines(table: list[HmpCommand], prefix: str) -> str:
    return "".join(f"{prefix}{cmd.name} {cmd.params} -- {cmd.help}\n" for cmd in table)


def _h_migrate(ctx: MonitorContext, a: dict[str, Any]) -> str:
    c.migrate(ctx, a["uri"])
    return ""


def _h_guest(ctx: MonitorContext, a: dict[str, Any]) -> str:
    words = (a.get("args") or "").split()
    if a["command"] == "grow":  # the extensions' workloads (monitor/extensions.py)
        return ext.guest_grow(ctx, words)
    if a["command"] == "suspend":
        return ext.guest_suspend(ctx)
    message = c.guest_command(ctx, a["command"], words).message
    return message + "\n" if message else ""


def _h_mtree(ctx: MonitorContext, a: dict[str, Any]) -> str:
    if a.get("flatview") or a.get("dispatch_tree") or a.get("owner"):
        raise MonitorError("vmemlab models the memory tree only: -f, -d and -o are not "
                           "supported")
    return mem_info.fmt_mtree(ctx)  # -D too: vmemlab has no disabled region


def _h_virtio_mem(ctx: MonitorContext, a: dict[str, Any]) -> str:
    c.virtio_mem_resize(ctx, a["id"], a["size"])
    return ""


def _h_balloon(ctx: MonitorContext, a: dict[str, Any]) -> str:
    b.balloon(ctx, a["value"])  # 'M': already in bytes (QEMU's monitor multiplies by MiB)
    return ""


def _simple(fn: Callable[[MonitorContext], object]) -> Handler:
    def handler(ctx: MonitorContext, a: dict[str, Any]) -> str:
        fn(ctx)
        return ""
    return handler


COMMANDS: list[HmpCommand] = [
    HmpCommand("balloon", "value:M", "target",
               "request VM to change its memory allocation (in MB)", _h_balloon,
               visitor_safe=True),
    HmpCommand("cont|c", "", "", "resume emulation", _simple(c.cont), visitor_safe=True),
    # a visitor's DIMMs live in their own machine's device-memory area, bounded by its maxmem
    HmpCommand("device_add", "device:O", "driver[,prop=value][,...]",
               "add device, like -device on the command line", dimm.hmp_device_add,
               visitor_safe=True),
    HmpCommand("device_del", "id:s", "device", "remove device",
               dimm.hmp_device_del, visitor_safe=True),
    HmpCommand("guest", "command:s,args:S?", "command [args...]",
               "drive the guest workload: alloc SIZE [movable|unmovable] [huge] "
               "[any|boot|DEVICE], "
               "pin SIZE [DEVICE], free ID, touch ID, verify [ID], dump [--legacy] [DEVICE], "
               "rogue-write [OFFSET] [DEVICE], read ADDR, "
               "online [DEVICE] [online_movable|online_kernel|online], stats, reboot, "
               "poweroff, pressure SIZE, balloon-rogue PAGES, grow CHUNK [LIMIT] [--no-ask], "
               "suspend (vmemlab)",
               _h_guest, visitor_safe=True),
    HmpCommand("help|?", "name:S?", "[cmd]", "show the help", _h_help, visitor_safe=True),
    HmpCommand("info", "item:s?", "[subcommand]", "show various information about the system "
               "state", _h_info, visitor_safe=True),
    HmpCommand("object_add", "object:O", "[qom-type=]type,id=str[,prop=value][,...]",
               "create QOM object", dimm.hmp_object_add, visitor_safe=True),
    HmpCommand("object_del", "id:s", "id", "destroy QOM object", dimm.hmp_object_del,
               visitor_safe=True),
    HmpCommand("mem-set", "size:s", "size",
               "set the Xen / Hyper-V behaviour model's memory target (vmemlab: xl mem-set, "
               "Dynamic Memory)", behaviour_model.hmp_mem_set, visitor_safe=True),
    # writes a file on the server's host: never for a visitor (the page saves to a download)
    HmpCommand("migrate", "detach:-d,blk:-b,inc:-i,resume:-r,uri:s",
               "[-d] [-b] [-i] [-r] uri",
               "migrate to URI (vmemlab: only \"exec:cat > FILE\")", _h_migrate),
    HmpCommand("pace", "args:S?", "[ms|step] [pause-after-reset=on|off]",
               "teaching pace (vmemlab, not QEMU): hold each virtio-mem request ms in "
               "flight (0: full speed); 'step' runs until the next request is answered",
               pace.hmp_pace, visitor_safe=True),
    HmpCommand("qom-get", "path:s,property:s", "path property", "print QOM property",
               _h_qom_get, visitor_safe=True),
    HmpCommand("qom-list", "path:s?", "path", "list QOM properties", _h_qom_list,
               visitor_safe=True),
    HmpCommand("qom-set", "json:-j,path:s,property:s,value:S", "[-j] path property value",
               "set QOM property.\n\t\t\t-j: the value is specified in json format.",
               _h_qom_set, visitor_safe=True),
    # closes the machine: the page would be left without one
    HmpCommand("quit|q", "", "", "quit the emulator", _simple(c.quit_machine)),
    HmpCommand("stop|s", "", "", "stop emulation", _simple(c.stop), visitor_safe=True),
    HmpCommand("system_reset", "", "", "reset the system", _simple(c.system_reset),
               visitor_safe=True),
    HmpCommand("system_wakeup", "", "", "wakeup guest from suspend", _simple(ext.system_wakeup),
               visitor_safe=True),
    HmpCommand("virtio-mem", "id:s,size:l", "id size_mb",
               "resize a virtio-mem device to size_mb MiB (the 2017 RFC's command)",
               _h_virtio_mem, visitor_safe=True),
    HmpCommand("x-virtio-mem-autoscale", "id:s,mode:s,args:S?", "id on low high step|off",
               "a host-side autoscaler for requested-size (vmemlab experiment)",
               ext.hmp_autoscale, visitor_safe=True),
    HmpCommand("x-virtio-mem-request-answer", "id:s,answer:s,size:s?", "id grant|deny [size]",
               "answer the guest request waiting for the presenter (vmemlab experiment)",
               ext.hmp_answer, visitor_safe=True),
    HmpCommand("x-virtio-mem-request-policy", "id:s,policy:s,args:S?",
               "id deny|ask|cap size|rate size [seconds]",
               "how the host answers guest requests (vmemlab experiment)", ext.hmp_policy,
               visitor_safe=True),
    HmpCommand("x", "fmt:/,addr:l", "/fmt addr", "virtual memory dump starting at 'addr'",
               lambda ctx, a: _dump(ctx, a, False), visitor_safe=True),
    HmpCommand("xp", "fmt:/,addr:l", "/fmt addr", "physical memory dump starting at 'addr'",
               lambda ctx, a: _dump(ctx, a, True), visitor_safe=True),
]

# every ``info`` subcommand only reads the machine
INFO_COMMANDS: list[HmpCommand] = [
    HmpCommand("balloon", "", "", "show balloon information",
               lambda ctx, a: b.fmt_info_balloon(b.query_balloon(ctx)), visitor_safe=True),
    HmpCommand("behaviour-model", "", "",
               "show the Xen / Hyper-V behaviour model's host view (vmemlab)",
               lambda ctx, a: behaviour_model.fmt(behaviour_model.query(ctx)),
               visitor_safe=True),
    HmpCommand("guest", "", "", "show what the guest reports about its memory (vmemlab)",
               lambda ctx, a: fmt_guest(c.guest_info(ctx)), visitor_safe=True),
    HmpCommand("memdev", "", "", "show memory backends",
               lambda ctx, a: mem_info.fmt_memdev(mem_info.query_memdev(ctx)),
               visitor_safe=True),
    HmpCommand("memory-devices", "", "", "show memory devices",
               lambda ctx, a: fmt_memory_devices(c.query_memory_devices(ctx)),
               visitor_safe=True),
    HmpCommand("memory_size_summary", "", "",
               "show the amount of initially allocated and present hotpluggable (if "
               "enabled) memory in bytes.",
               lambda ctx, a: "base memory: {base-memory}\nplugged memory: {plugged-memory}\n"
               .format_map(c.memory_size_summary(ctx)), visitor_safe=True),
    HmpCommand("migrate", "", "", "show migration status",
               lambda ctx, a: fmt_migrate(c.query_migrate(ctx)), visitor_safe=True),
    HmpCommand("mtree", "flatview:-f,dispatch_tree:-d,owner:-o,disabled:-D",
               "[-f][-d][-o][-D]",
               "show memory tree (-f: dump flat view for address spaces;-d: dump dispatch "
               "tree, valid with -f only);-o: dump region owners/parents;-D: dump disabled "
               "regions (vmemlab: the tree only; no region is disabled)",
               _h_mtree, visitor_safe=True),
    HmpCommand("numa", "", "", "show NUMA information",
               lambda ctx, a: fmt_numa(c.numa_info(ctx)), visitor_safe=True),
    HmpCommand("ramblock", "", "", "Display system RAMBlock information",
               lambda ctx, a: mem_info.fmt_ramblock(mem_info.ram_blocks(ctx)),
               visitor_safe=True),
    HmpCommand("status", "", "", "show the current VM status (running|paused)",
               lambda ctx, a: fmt_status(c.query_status(ctx)), visitor_safe=True),
    HmpCommand("virtio", "", "", "List all available virtio devices",
               lambda ctx, a: vs.fmt_virtio(vs.query_virtio(ctx)), visitor_safe=True),
    HmpCommand("virtio-status", "path:s", "path", "Display status of a given virtio device",
               lambda ctx, a: vs.fmt_virtio_status(
                   a["path"], vs.query_virtio_status(ctx, a["path"])), visitor_safe=True),
    HmpCommand("version", "", "", "show the version of QEMU",
               lambda ctx, a: "7.2.22 (vmemlab)\n", visitor_safe=True),
    HmpCommand("virtio-mem", "id:s", "id",
               "show the state of a virtio-mem device (the 2017 RFC's command; its 'Request "
               "status' is the guest's own report, over a vmemlab paravirtual call: shipped "
               "virtio-mem has no channel for it)",
               lambda ctx, a: fmt_virtio_mem(c.virtio_mem_info(ctx, a["id"])), visitor_safe=True),
    HmpCommand("virtio-mem-autoscale", "id:s", "id",
               "show the host-side autoscaler of a virtio-mem device and its decisions "
               "(vmemlab experiment)", ext.hmp_info_autoscale, visitor_safe=True),
    HmpCommand("virtio-mem-blocks", "id:s", "id",
               "show the block map of a virtio-mem device (vmemlab)",
               lambda ctx, a: fmt_block_map(c.block_map(ctx, a["id"])), visitor_safe=True),
    HmpCommand("virtio-mem-requests", "id:s", "id",
               "show the guest -> host requests of a virtio-mem device and the host's policy "
               "(vmemlab experiment: the 2017 RFC's addendum, in no virtio specification)",
               ext.hmp_info_requests, visitor_safe=True),
]


def _lookup(table: list[HmpCommand], name: str) -> HmpCommand | None:
    for cmd in table:
        if name in cmd.names:
            return cmd
    return None


# ------------------------------------------------------------------------------ parser

_SPACE = " \t\n\r\v\f"


def _skip(line: str, p: int) -> int:
    while p < len(line) and line[p] in _SPACE:
        p += 1
    return p


def _get_str(line: str, p: int) -> tuple[str | None, int]:
    """QEMU ``get_str``: a double-quoted string with escapes, or a run of non-spaces."""
    p = _skip(line, p)
    if p >= len(line):
        return None, p
    if line[p] == '"':
        p += 1
        out = []
        while p < len(line) and line[p] != '"':
            ch = line[p]
            if ch == "\\":
                p += 1
                if p >= len(line):
                    raise ParseError("unterminated string")
                esc = line[p]
                if esc in '\\\'"':
                    out.append(esc)
                elif esc == "n":
                    out.append("\n")
                elif esc == "r":
                    out.append("\r")
                else:
                    raise ParseError(f"unsupported escape code: '\\{esc}'")
            else:
                out.append(ch)
            p += 1
        if p >= len(line):
            raise ParseError("unterminated string")
        return "".join(out), p + 1
    start = p
    while p < len(line) and line[p] not in _SPACE:
        p += 1
    return line[start:p], p


def _get_int(line: str, p: int) -> tuple[int | None, int]:
    p = _skip(line, p)
    if p >= len(line):
        return None, p
    start = p
    while p < len(line) and line[p] not in _SPACE:
        p += 1
    word = line[start:p]
    try:
        value = int(word, 0) if not re.fullmatch(r"0\d+", word) else int(word, 8)
    except ValueError:
        raise ParseError("invalid char in expression") from None
    return value, p


def _parse_args(cmd: HmpCommand, line: str, p: int, shown: str) -> dict[str, Any]:
    args: dict[str, Any] = {}
    specs = [s for s in cmd.args_type.split(",") if s]
    for spec in specs:
        key, _, typ = spec.partition(":")
        optional = typ.endswith("?")
        typ = typ.rstrip("?")
        if typ.startswith("-"):
            flag = typ[1:]
            q = _skip(line, p)
            if line[q:q + 2] == "-" + flag and (q + 2 == len(line) or line[q + 2] in _SPACE):
                args[key] = True
                p = q + 2
            else:
                args[key] = False
            continue
        q = _skip(line, p)
        if typ != "S" and q < len(line) and line[q] == "-" and typ == "s" and key != "value":
            # an option this command does not know (QEMU: "unsupported option")
            word = line[q:].split()[0]
            if len(word) == 2 and word[1].isalpha() and not any(
                    s.partition(":")[2] == word for s in specs):
                raise ParseError(f"{shown}: unsupported option {word}", shown)
        if typ == "s":
            try:
                value, p = _get_str(line, p)
            except ParseError as err:
                raise ParseError(f"{err}\n{shown}: string expected", shown) from None
            if value is None:
                if optional:
                    continue
                raise ParseError(f"{shown}: string expected", shown)
            args[key] = value
        elif typ == "S":
            rest = line[_skip(line, p):]
            p = len(line)
            if not rest:
                if optional:
                    continue
                raise ParseError(f"{shown}: string expected", shown)
            args[key] = rest
        elif typ in ("l", "i"):
            try:
                number, p = _get_int(line, p)
            except ParseError as err:
                raise ParseError(str(err), shown) from None
            if number is None:
                if optional:
                    continue
                raise ParseError(f"{shown}: integer expected", shown)
            args[key] = number
        elif typ == "M":  # QEMU: get_expr(), must be >= 0, then times 1 MiB
            try:
                number, p = get_expr(line, p)
            except ExprError as err:
                raise ParseError(str(err), shown) from None
            if number < 0:
                raise ParseError("enter a positive value", shown)
            args[key] = ((number << 20) + (1 << 63)) % (1 << 64) - (1 << 63)  # int64 wraps
        elif typ == "O":  # QemuOpts: one word, parsed by the command
            try:
                value, p = _get_str(line, p)
            except ParseError as err:
                raise ParseError(str(err), shown) from None
            if value is None:
                if optional:
                    continue
                raise ParseError(f"{shown}: string expected", shown)
            args[key] = value
        elif typ == "/":
            q = _skip(line, p)
            if q < len(line) and line[q] == "/":
                end = q
                while end < len(line) and line[end] not in _SPACE:
                    end += 1
                args[key] = line[q:end]
                p = end
        else:  # pragma: no cover - table error
            raise ParseError(f"{shown}: bad argument type '{typ}'")
    if _skip(line, p) < len(line):
        raise ParseError(f"{shown}: extraneous characters at the end of line", shown)
    return args


def parse(line: str, policy: Policy = FULL) -> tuple[HmpCommand | None, dict[str, Any], str]:
    """Parse one HMP line: (command, args, shown name); raises ParseError/MonitorError,
    or ``NotOffered`` for a command the policy does not offer."""
    p = _skip(line, 0)
    if p >= len(line):
        return None, {}, ""
    start = p
    while p < len(line) and line[p] not in _SPACE:
        p += 1
    name = line[start:p]
    cmd = _lookup(COMMANDS, name)
    if cmd is None:
        raise MonitorError(f"unknown command: '{line[start:p]}'", "CommandNotFound")
    if not policy.offers(cmd):
        raise NotOffered(name)
    shown = cmd.names[0]
    if cmd.names[0] == "info":
        q = _skip(line, p)
        if q < len(line):
            e = q
            while e < len(line) and line[e] not in _SPACE:
                e += 1
            sub = _lookup(INFO_COMMANDS, line[q:e])
            if sub is None:
                raise MonitorError(f"unknown command: '{line[start:e]}'", "CommandNotFound")
            if not policy.offers(sub):
                raise NotOffered(line[start:e])
            cmd, p, shown = sub, e, "info " + sub.names[0]
    return cmd, _parse_args(cmd, line, p, shown), shown


def execute(ctx: MonitorContext, line: str, policy: Policy = FULL) -> str:
    """Run one line as ``policy`` allows; the output (never a traceback)."""
    refused = line_error(line)
    if refused is not None:  # QEMU would run the first 4095 bytes: we run nothing
        return f"Error: {refused}\n"
    try:
        cmd, args, shown = parse(line, policy)
    except NotOffered as err:
        return f"not available in the {policy.where}: '{err}'\n"
    except ParseError as err:
        hint = f'Try "help {err.command}" for more information\n' if err.command else ""
        return f"{err}\n{hint}"
    except MonitorError as err:
        return f"{err.desc}\n"
    except Exception as err:  # never a traceback on the console
        return f"Error: {c.describe_error(err).desc}\n"
    if cmd is None:
        return ""
    if shown in ("help", "info"):  # lists what this policy offers, not the whole table
        return help_text(args.get("name") if shown == "help" else "info", policy)
    try:
        if ctx is None:
            return cmd.handler(ctx, args)
        handler = cmd.handler
        return ctx.run(lambda: handler(ctx, args))
    except ParseError as err:
        return f"{err}\n"
    except MonitorError as err:
        return f"Error: {err.desc}\n"
    except Exception as err:  # never a traceback on the console
        return f"Error: {c.describe_error(err).desc}\n"


def run_hmp(machine: Machine, line: str, policy: Policy = FULL) -> str:
    """Run one HMP command line against ``machine``; returns its output ("" if none)."""
    return execute(context_for(machine), line, policy)


# ------------------------------------------------------------------------------ completion

def complete(ctx: MonitorContext | None, before: str, policy: Policy = FULL) -> list[str]:
    """Candidates for the word being typed at the end of ``before`` (readline, web)."""
    words = [w for w in re.split(r"[ \t\n\r\v\f]+", before) if w]
    typing_new = not before or before[-1] in _SPACE
    current = "" if typing_new else words[-1]
    done = words if typing_new else words[:-1]
    if not done:
        return sorted(n for cmd in COMMANDS for n in cmd.names if policy.offers(cmd)
                      and ((n.startswith(current) and len(n) > 1) or n == current))
    first = done[0]
    ids: list[str] = []
    qom_ids: list[str] = []
    if ctx is not None:
        ids = list(ctx.machine.devices)
        balloon = ctx.machine.balloon
        qom_ids = ids + ([balloon.id] if balloon is not None else [])
    if first == "info":
        if len(done) == 1:
            return sorted(n for cmd in INFO_COMMANDS for n in cmd.names
                          if policy.offers(cmd) and n.startswith(current))
        if done[1] in ("virtio-mem", "virtio-mem-blocks") and len(done) == 2:
            return [i for i in ids if i.startswith(current)]
        if done[1] == "virtio-status" and len(done) == 2:
            return [p for p in map(vs.backend_path, ids) if p.startswith(current)]
        return []
    args = [w for w in done[1:] if not w.startswith("-")]
    if first in ("qom-get", "qom-set", "qom-list", "virtio-mem", "device_del") and not args:
        named = qom_ids if first.startswith("qom-") else ids
        paths = named + [f"/machine/peripheral/{i}" for i in named] + [
            f"/machine/peripheral/{i}/virtio-backend" for i in named]
        return [p for p in paths if p.startswith(current)]
    if first in ("qom-get", "qom-set") and len(args) == 1:
        names = ["requested-size", "size", "block-size", "memaddr", "node", "memdev",
                 "unplugged-inaccessible", "prealloc", "type", "guest-stats",
                 "guest-stats-polling-interval", "deflate-on-oom", "free-page-reporting"]
        return [n for n in names if n.startswith(current)]
    if first == "guest" and not args:
        return sorted(g for g in c.GUEST_COMMANDS if g.startswith(current))
    if first == "help" and not args:
        return sorted(n for cmd in COMMANDS for n in cmd.names
                      if policy.offers(cmd) and n.startswith(current))
    return []


def command_names() -> list[str]:
    return [n for cmd in COMMANDS for n in cmd.names]


__all__ = ["COMMANDS", "FULL", "INFO_COMMANDS", "VISITOR", "Policy", "complete", "execute",
           "help_text", "parse", "run_hmp"]
