"""Guest workload operations: a typed request in (``GuestOp``), a typed result out (``Outcome``).

Every front-end asks the guest for work through :func:`run_guest_op`: HMP's ``guest alloc 64M
unmovable vm0``, the page's allocate button, a scenario's ``guest: alloc`` step. The work is
done by the guest's own allocator and driver (``emulator.workload``); the numbers in the
outcome are the guest's. ``Outcome.message`` is the one line every front-end shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control.errors import ControlError, ErrorKind
from control.sizes import format_mib
from emulator.abi import PAGE_SIZE
from emulator.events import Violation
from emulator.machine import Machine
from emulator.states import RunState
from emulator.workload import GuestError, Workload, errno_name

EFAULT = -14
MAX_ROGUE_PAGES = 1 << 32  # the guest counts pages in 64 bits; a u32 of them is plenty


@dataclass(frozen=True)
class Alloc:
    """Allocate ``size`` bytes; ``target``: None (anywhere), "boot" or a device id."""

    size: int
    unmovable: bool = False
    target: str | None = None
    huge: bool = False  # a huge-page allocation: prefers RAM_HUGE devices (docs/extensions.md)
    name = "alloc"


@dataclass(frozen=True)
class Free:
    alloc: int = 0  # 0: the most recent allocation
    name = "free"


@dataclass(frozen=True)
class Touch:
    alloc: int = 0
    name = "touch"


@dataclass(frozen=True)
class Verify:
    alloc: int = 0
    name = "verify"


@dataclass(frozen=True)
class Dump:
    """A kdump-style read of device memory (``device`` None: every device).

    Default: Linux >= 5.16's kdump (``virtio_mem_vmcore_pfn_is_ram``: a STATE request per
    device block, only plugged blocks are read), whatever the features. ``legacy``: the
    RFC's / a pre-5.16 kdump that reads every page of the added memory, unplugged too.
    """

    device: str | None = None
    legacy: bool = False
    name = "dump"


@dataclass(frozen=True)
class RogueWrite:
    """A store to unplugged memory at ``addr`` (0: the guest picks an unplugged block)."""

    addr: int = 0
    device: str | None = None
    name = "rogue-write"


ROGUE_VALUE = 0xDEAD_BEEF_DEAD_BEEF  # what the guest stores (guest/main.c)


@dataclass(frozen=True)
class Read:
    addr: int
    name = "read"


@dataclass(frozen=True)
class Online:
    """Online the offline memory blocks of ``device`` (None: all), as writing ``online_type``
    to /sys/devices/system/memory/memoryN/state does (``online_movable``, ``online_kernel``,
    ``online``)."""

    device: str | None = None
    online_type: str = "online_movable"
    name = "online"


ONLINE_TYPES = ("online_movable", "online_kernel", "online")


@dataclass(frozen=True)
class BalloonRogue:
    """Write to ``pages`` pages the balloon holds without telling the host: a rogue
    deflate. Nothing stops it -- the host just backs the pages again."""

    pages: int
    name = "balloon-rogue"


@dataclass(frozen=True)
class Pressure:
    """Allocate ``size`` bytes of movable memory anywhere, as a growing workload would; a
    balloon with DEFLATE_ON_OOM gives pages back on its own to make room."""

    size: int
    name = "pressure"


@dataclass(frozen=True)
class Stats:
    name = "stats"


@dataclass(frozen=True)
class GuestReboot:
    """The guest reboots itself (PSCI SYSTEM_RESET); it never answers."""

    name = "reboot"


@dataclass(frozen=True)
class Poweroff:
    name = "poweroff"


GuestOp = (Alloc | Free | Touch | Verify | Dump | RogueWrite | Read | Online | Stats
           | GuestReboot | Poweroff | BalloonRogue | Pressure)


@dataclass(frozen=True)
class Outcome:
    """What the guest did: ``values`` carry its numbers under stable keys (scenarios match
    them with ``expect:``), ``message`` says it in one line ("" when there is nothing to
    say, as HMP prints nothing for ``guest reboot``)."""

    command: str
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, **self.values}


def check_guest_can_act(machine: Machine, *, booted: bool = True) -> None:
    """Refuse a guest command when the guest cannot take one: not running (REFUSED), or,
    with ``booted``, not yet booted (BUSY). Every guest command asks this first."""
    state = machine.runstate
    if state is not RunState.RUNNING:
        hint = "; resume it first" if state.resumable else ""
        raise ControlError(f"the guest is not running (VM status: {state}){hint}",
                           ErrorKind.REFUSED)
    if booted and not machine.guest_booted:
        raise ControlError("the guest has not finished booting", ErrorKind.BUSY)


def run_guest_op(machine: Machine, op: GuestOp, timeout: float = 60.0) -> Outcome:
    """Have the guest carry out ``op``; ``ControlError`` when it cannot or did not."""
    if isinstance(op, BalloonRogue) and machine.balloon is None:  # QEMU: have_balloon() first
        raise ControlError("No balloon device has been activated", ErrorKind.NOT_ACTIVE)
    check_guest_can_act(machine, booted=not isinstance(op, (GuestReboot, Poweroff)))
    for dev in (getattr(op, "device", None), getattr(op, "target", None)):
        if dev not in (None, "boot") and dev not in machine.devices and not (
                isinstance(dev, str) and machine.hotplug.by_id(dev) is not None):
            raise ControlError(f"Device '{dev}' not found", ErrorKind.NOT_FOUND)
    if isinstance(op, BalloonRogue) and not 0 < op.pages <= MAX_ROGUE_PAGES:
        raise ControlError(f"guest balloon-rogue: pages must be between 1 and "
                           f"{MAX_ROGUE_PAGES}")
    if isinstance(op, Pressure) and op.size <= 0:
        raise ControlError("guest pressure: the size must be positive")
    work = Workload(machine, timeout=timeout)
    try:
        return _run(machine, work, op)
    except GuestError as err:
        raise ControlError(f"guest {op.name} failed: {errno_name(err.result.status)}",
                           ErrorKind.FAILED) from None
    except ControlError:
        raise
    except Exception as err:
        translated = ControlError.of(err)
        raise ControlError(f"guest {op.name}: {translated.message}", translated.kind) from None


def _rogue_write(machine: Machine, work: Workload, op: RogueWrite) -> Outcome:
    """The store, then what it did: refused (and why, from the recorded violation), dropped
    (completed without effect: it reads back 0), or through -- and whether the host now
    backs that page (pagemap), which is what a rogue write costs the host."""
    device = op.device or next(iter(machine.devices), None)
    if device is None and not op.addr:  # a DIMM-only machine: the address says where
        raise ControlError("guest rogue-write: this machine has no virtio-mem device: "
                           "give an address", ErrorKind.INVALID)
    seq = machine.bus.last_seq
    res = work.rogue_write(op.addr, device or 0)
    addr = res.values[0] or op.addr
    reasons = [r.event.reason for r in machine.bus.since(seq)
               if isinstance(r.event, Violation) and r.event.addr == addr]
    resident = False
    region = machine.regions.get(device) if device else None
    if region is not None and region.contains(addr, 8):
        offset = (addr - region.gpa) & ~(PAGE_SIZE - 1)
        resident = region.resident_bytes(offset, PAGE_SIZE) > 0
    stored = res.status == 0
    dropped = stored and res.values[1] != ROGUE_VALUE
    where = f"0x{addr:x} ({device})" if device else f"0x{addr:x}"
    if res.status == EFAULT:
        text = f"write to {where} blocked by the host (EFAULT)"
        if reasons:
            text += f": {reasons[-1]}"
    elif dropped:
        text = (f"write to {where} was dropped: {reasons[-1] if reasons else 'no memory'}"
                f"; it reads back 0x{res.values[1]:x}")
    elif stored:
        text = (f"write to {where} went through: nothing protects unplugged memory; the host "
                f"backs that page again ({'resident' if resident else 'not resident'})")
    else:
        text = f"write to {where} failed: {errno_name(res.status)}"
    return Outcome("rogue-write", text,
                   {"device": device, "addr": addr, "status": res.status,
                    "blocked": res.status == EFAULT, "errno": errno_name(res.status),
                    "stored": stored and not dropped, "dropped": dropped,
                    "read-back": res.values[1], "host-resident": resident})


def _run(machine: Machine, work: Workload, op: GuestOp) -> Outcome:
    if isinstance(op, Alloc):
        a = work.alloc(op.size, unmovable=op.unmovable, target=op.target, huge=op.huge)
        kind = ("unmovable" if a.unmovable else "movable") + (", huge pages" if op.huge else "")
        return Outcome("alloc", f"allocation {a.id}: {a.pages} pages "
                       f"({format_mib(a.pages * 4096)}) {kind}",
                       {"id": a.id, "pages": a.pages, "unmovable": a.unmovable})
    if isinstance(op, (Free, Touch)):
        pages = work.free(op.alloc) if isinstance(op, Free) else work.touch(op.alloc)
        verb = "freed" if isinstance(op, Free) else "touched"
        return Outcome(op.name, f"{verb} {pages} pages", {"id": op.alloc, "pages": pages})
    if isinstance(op, Verify):
        bad, checked = work.verify(op.alloc)
        return Outcome("verify", f"verified {checked} pages: {bad} bad",
                       {"id": op.alloc, "bad": bad, "checked": checked})
    if isinstance(op, Dump):
        nbytes, nonzero = work.dump(op.device, legacy=op.legacy)
        how = ("legacy kdump: every page of the added memory, unplugged parts too"
               if op.legacy else "Linux's kdump: STATE requests, plugged blocks only")
        return Outcome("dump", f"read {nbytes} bytes: {nonzero} non-zero pages ({how})",
                       {"device": op.device, "bytes": nbytes, "nonzero-pages": nonzero,
                        "variant": "legacy" if op.legacy else "linux"})
    if isinstance(op, RogueWrite):
        return _rogue_write(machine, work, op)
    if isinstance(op, Read):
        res = work.read(op.addr)
        text = (f"read 0x{op.addr:x} failed: {errno_name(res.status)}" if res.status
                else f"0x{op.addr:x}: 0x{res.values[0]:016x}")
        return Outcome("read", text, {"addr": op.addr, "status": res.status,
                                      "value": res.values[0], "errno": errno_name(res.status)})
    if isinstance(op, Online):
        if op.online_type not in ONLINE_TYPES:
            raise ControlError(f"online type '{op.online_type}': expected one of "
                               f"{', '.join(ONLINE_TYPES)}")
        n = work.online(op.device, op.online_type)
        return Outcome("online", f"onlined {n} memory block{'' if n == 1 else 's'} "
                       f"({op.online_type})",
                       {"device": op.device, "type": op.online_type, "blocks": n})
    if isinstance(op, BalloonRogue):
        written, bad = work.balloon_rogue(op.pages)
        return Outcome("balloon-rogue", f"reused {written} balloon pages "
                       f"({format_mib(written * 4096)}) without telling the host; "
                       f"{written - bad} read back what was written",
                       {"pages": written, "bad": bad})
    if isinstance(op, Pressure):
        return _pressure(machine, work, op)
    if isinstance(op, Stats):
        work.stats()
        return Outcome("stats", "")  # the guest prints them on its console
    if isinstance(op, GuestReboot):
        work.reboot()
        return Outcome("reboot", "")
    machine.submit_command("poweroff")
    return Outcome("poweroff", "")


def _balloon_pages(machine: Machine) -> int:
    balloon = machine.balloon
    return balloon.actual if balloon is not None else 0


def _pressure(machine: Machine, work: Workload, op: Pressure) -> Outcome:
    before = _balloon_pages(machine)
    a = work.alloc(op.size)
    given = max(0, before - _balloon_pages(machine)) * 4096
    text = f"allocation {a.id}: {format_mib(a.pages * 4096)} movable"
    if given:
        text += f"; the balloon gave back {format_mib(given)} on its own (deflate-on-oom)"
    return Outcome("pressure", text, {"id": a.id, "pages": a.pages, "balloon-deflated": given})
