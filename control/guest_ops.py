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
from emulator.machine import Machine
from emulator.states import RunState
from emulator.workload import GuestError, Workload, errno_name

EFAULT = -14


@dataclass(frozen=True)
class Alloc:
    """Allocate ``size`` bytes; ``target``: None (anywhere), "boot" or a device id."""

    size: int
    unmovable: bool = False
    target: str | None = None
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
    """A kdump-style read of device memory (``device`` None: every device)."""

    device: str | None = None
    name = "dump"


@dataclass(frozen=True)
class RogueWrite:
    """A store to unplugged memory at ``addr`` (0: the guest picks an unplugged block)."""

    addr: int = 0
    device: str | None = None
    name = "rogue-write"


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
           | GuestReboot | Poweroff)


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


def run_guest_op(machine: Machine, op: GuestOp, timeout: float = 60.0) -> Outcome:
    """Have the guest carry out ``op``; ``ControlError`` when it cannot or did not."""
    state = machine.runstate
    if state is not RunState.RUNNING:
        hint = "; resume it first" if state.resumable else ""
        raise ControlError(f"the guest is not running (VM status: {state}){hint}",
                           ErrorKind.REFUSED)
    if not machine.guest_booted and not isinstance(op, (GuestReboot, Poweroff)):
        raise ControlError("the guest has not finished booting", ErrorKind.BUSY)
    for dev in (getattr(op, "device", None), getattr(op, "target", None)):
        if dev not in (None, "boot") and dev not in machine.devices and not (
                isinstance(dev, str) and machine.hotplug.by_id(dev) is not None):
            raise ControlError(f"Device '{dev}' not found", ErrorKind.NOT_FOUND)
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


def _run(machine: Machine, work: Workload, op: GuestOp) -> Outcome:
    if isinstance(op, Alloc):
        a = work.alloc(op.size, unmovable=op.unmovable, target=op.target)
        kind = "unmovable" if a.unmovable else "movable"
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
        nbytes, nonzero = work.dump(op.device)
        return Outcome("dump", f"read {nbytes} bytes: {nonzero} non-zero pages",
                       {"device": op.device, "bytes": nbytes, "nonzero-pages": nonzero})
    if isinstance(op, RogueWrite):
        device = op.device or next(iter(machine.devices), None)
        if device is None and not op.addr:
            raise ControlError("guest rogue-write: this machine has no virtio-mem device: "
                               "give an address")
        res = work.rogue_write(op.addr, device or 0)
        where = f"{device}+0x{op.addr:x}" if device else f"0x{op.addr:x}"
        if res.status == EFAULT:
            text = f"write to {where} blocked by the host (EFAULT)"
        elif res.status == 0:
            text = f"write to {where} went through"
        else:
            text = f"write to {where} failed: {errno_name(res.status)}"
        return Outcome("rogue-write", text,
                       {"device": device, "addr": op.addr, "status": res.status,
                        "blocked": res.status == EFAULT, "errno": errno_name(res.status)})
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
    if isinstance(op, Stats):
        work.stats()
        return Outcome("stats", "")  # the guest prints them on its console
    if isinstance(op, GuestReboot):
        work.reboot()
        return Outcome("reboot", "")
    machine.submit_command("poweroff")
    return Outcome("poweroff", "")
