"""The comparison lab's mechanisms: one small adapter each over the control layer.

The same guest, the same size (boot RAM + ``extra`` memory that can come and go) and the same
workload on virtio-mem, pc-dimms, virtio-balloon (when this build has it) and the Xen and
Hyper-V behaviour models. An adapter knows how *its* mechanism builds its machine, gives
memory back, where "the guest pins 16 MiB" lands, what a rogue write is, which boot option
removes its driver and what a migration needs -- and measures each from the machine itself
(snapshots, host residency, events), never from a table. Front-ends (the /compare page,
scenarios) drive every adapter with the same calls and show what was measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from control.boot_options import has_option, with_option
from control.errors import ControlError, ErrorKind
from control.guest_ops import Alloc, Free, RogueWrite
from control.machine_control import MachineControl
from control.sizes import format_mib
from emulator.config import DimmConfig, MachineConfig, MemoryDeviceConfig, MiB
from emulator.machine import Machine

GiB = 1024 * MiB
SETTLE_S = 20.0


@dataclass(frozen=True)
class LabSize:
    """What every machine of a comparison has: boot RAM, and memory that can come and go."""

    boot: int = 512 * MiB
    extra: int = 1 * GiB
    online: str = "online"  # memhp_default_state: online (ZONE_NORMAL) or online_movable
    dimm: int = 256 * MiB  # the DIMM machine's module size

    @property
    def cmdline(self) -> str:
        return f"memhp_default_state={self.online}"


@dataclass
class Measured:
    """One action's result on one mechanism: a short text and the numbers behind it."""

    text: str
    values: dict[str, Any] = field(default_factory=dict)
    ok: bool = True


def wait(predicate: Any, timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


class Mechanism:
    """The common part; subclasses fill in what differs (see the module docstring)."""

    name = ""
    title = ""
    kind = "shipped"  # "shipped": QEMU + Linux behaviour; "model": a behaviour model
    unit_text = ""
    driver_option = ""  # the boot option a guest without the driver has

    def __init__(self, size: LabSize) -> None:
        self.size = size

    def config(self) -> MachineConfig:
        raise NotImplementedError

    def prepare(self, control: MachineControl) -> None:
        """Bring a freshly booted machine to the lab's starting point (all memory given)."""

    def wait_booted(self, control: MachineControl, timeout: float = 20.0) -> bool:
        """Until the guest booted and its driver took in what was there at boot."""
        return control.machine.wait_until(
            lambda m: m.guest_booted and self.boot_scanned(control), timeout)

    def boot_scanned(self, control: MachineControl) -> bool:
        """Whether the driver has taken in what was present at boot (the guest says
        "booted" before its drivers probe)."""
        return True

    # ---- what the host gives the guest, and taking it back
    def assigned(self, control: MachineControl) -> int:
        raise NotImplementedError

    def request_back(self, control: MachineControl, amount: int) -> None:
        raise NotImplementedError

    def settle(self, control: MachineControl) -> str:
        """Wait until the mechanism answered; a note on how it ended ("" if plainly)."""
        control.wait_settled(SETTLE_S)
        return ""

    def give_back(self, control: MachineControl, amount: int) -> Measured:
        before = self.assigned(control)
        self.request_back(control, amount)
        note = self.settle(control)
        after = self.assigned(control)
        returned = max(0, before - after)
        text = f"{format_mib(returned)} of {format_mib(amount)}"
        return Measured(text + (f" ({note})" if note else ""),
                        {"returned": returned, "asked": amount, "unit": self.unit_text,
                         "note": note})

    # ---- the workload
    def pin_target(self, control: MachineControl) -> str | None:
        return None

    def pin(self, control: MachineControl, size: int) -> Measured:
        out = control.guest(Alloc(size, unmovable=True, target=self.pin_target(control)))
        return Measured(out.message, dict(out.values))

    def rogue_write(self, control: MachineControl) -> Measured:
        raise NotImplementedError

    # ---- reboot
    def guest_sees(self, control: MachineControl) -> int:
        """RAM the guest has after boot (its own view)."""
        snap = control.snapshot()
        return snap.boot_ram_size + sum(d.plugged_size for d in snap.devices)

    def reboot(self, control: MachineControl, driver: bool) -> Measured:
        machine = control.machine
        cmdline = with_option(machine.config.cmdline, self.driver_option, not driver)
        engine_reset(machine, cmdline)
        if machine.runstate != "running":  # QEMU: a reset of a stopped machine waits for cont
            control.resume()
        if not self.wait_booted(control):
            return Measured("the guest did not boot", ok=False)
        self.settle(control)
        seen = self.guest_sees(control)
        wanted = self.host_wants(control)
        text = f"sees {format_mib(seen)}"
        if seen > wanted:
            text += f", more than the host wants ({format_mib(wanted)})"
        values: dict[str, Any] = {"seen": seen, "wanted": wanted, "driver": driver}
        if not driver:  # the workload uses what the guest sees
            touched = self.touch_all(control, seen)
            values["touched"] = touched
            text += "; " + touched
        return Measured(text, values, ok=machine.runstate == "running")

    def host_wants(self, control: MachineControl) -> int:
        return self.assigned(control) + control.machine.boot_ram.size

    def touch_all(self, control: MachineControl, seen: int) -> str:
        """The workload allocates nearly all the memory the guest sees, then frees it."""
        machine = control.machine
        try:
            out = control.guest(Alloc(max(seen - 192 * MiB, 64 * MiB)))
        except ControlError as err:
            if machine.runstate != "running":
                return f"the machine was killed ({machine.runstate})"
            return f"allocating it failed: {err.message}"
        control.guest(Free(int(out.values["id"])))
        return f"the workload used {format_mib(out.values['pages'] * 4096)} of it"

    # ---- migration
    def migrate(self, control: MachineControl) -> tuple[Measured, Machine | None]:
        dest = control.migrate(self.destination_config(control))
        return Measured("nothing: the destination has the same command line",
                        {"needs": []}), dest

    def destination_config(self, control: MachineControl) -> MachineConfig:
        return replace(self.config(), cmdline=control.machine.config.cmdline)


def engine_reset(machine: Machine, cmdline: str) -> None:
    from control.machine_control import engine_call

    engine_call(lambda: machine.system_reset(cmdline=cmdline))


# ------------------------------------------------------------------------------ virtio-mem

class VirtioMem(Mechanism):
    name = "virtio-mem"
    title = "virtio-mem"
    unit_text = "2 MiB (device block)"
    driver_option = "modprobe.blacklist=virtio_mem"

    def config(self) -> MachineConfig:
        s = self.size
        return MachineConfig(boot_ram=s.boot, maxmem=s.boot + 2 * s.extra, cmdline=s.cmdline,
                             devices=[MemoryDeviceConfig("vm0", s.extra, "mem0",
                                                         requested_size=s.extra)])

    def assigned(self, control: MachineControl) -> int:
        return control.machine.devices["vm0"].plugged_size

    def request_back(self, control: MachineControl, amount: int) -> None:
        dev = control.machine.devices["vm0"]
        control.resize("vm0", max(0, dev.requested_size - amount))

    def settle(self, control: MachineControl) -> str:
        control.wait_settled(SETTLE_S, device="vm0")
        state = control.machine.guest_states.get("vm0")
        return "stopped short: blocks still in use" if state == "stopped-short" else ""

    def pin_target(self, control: MachineControl) -> str | None:
        return "vm0"

    def rogue_write(self, control: MachineControl) -> Measured:
        try:
            out = control.guest(RogueWrite(0, "vm0"))
        except ControlError as err:
            return Measured(f"nothing to write to ({err.message})", {"cheated": False})
        blocked = bool(out.values["blocked"])
        if blocked:  # x-rfc-write-protect or an unmapped memslot (dynamic-memslots)
            return Measured("no: the host refused the write", {"cheated": False})
        return Measured("yes: shipped QEMU protects nothing; the host backs the page again"
                        if out.values.get("host-resident") else "yes: the write went through",
                        {"cheated": True})

    def host_wants(self, control: MachineControl) -> int:
        dev = control.machine.devices["vm0"]
        return control.machine.boot_ram.size + dev.requested_size


# ------------------------------------------------------------------------------ DIMMs

class Dimms(Mechanism):
    name = "dimm"
    title = "pc-dimm (ACPI)"
    driver_option = "acpi_no_memhotplug"

    def __init__(self, size: LabSize) -> None:
        super().__init__(size)
        self._asked: list[str] = []  # the DIMMs the last give-back asked for
        self._seq = 0  # the bus record before that request

    @property
    def unit_text(self) -> str:  # type: ignore[override]
        return f"{format_mib(self.size.dimm)} (a whole DIMM)"

    def config(self) -> MachineConfig:
        s = self.size
        count = max(1, s.extra // s.dimm)
        return MachineConfig(boot_ram=s.boot, maxmem=s.boot + 2 * s.extra, slots=8,
                             cmdline=s.cmdline,
                             dimms=[DimmConfig(f"dimm{i}", f"m-dimm{i}", s.dimm)
                                    for i in range(count)])

    def assigned(self, control: MachineControl) -> int:
        return sum(d.size for d in control.machine.hotplug.plugged())

    def request_back(self, control: MachineControl, amount: int) -> None:
        self._asked = []
        self._seq = control.machine.bus.last_seq
        dimms = sorted(control.machine.hotplug.plugged(), key=lambda d: -d.slot)
        for dimm in dimms:
            if amount <= 0:
                break
            control.dimms.device_del(dimm.id)
            self._asked.append(dimm.id)
            amount -= dimm.size

    def _answers(self, control: MachineControl) -> dict[str, str]:
        out: dict[str, str] = {}
        for record in control.machine.bus.since(self._seq):
            ev = record.event
            if ev.kind == "device_deleted":
                out[getattr(ev, "device", "")] = "deleted"
            elif ev.kind == "acpi_device_ost":
                info = getattr(ev, "info", {})
                if info.get("status") == 130:
                    out[info.get("device", "")] = "busy"
        return out

    def settle(self, control: MachineControl) -> str:
        asked = self._asked
        if not asked:
            return ""
        wait(lambda: all(d in self._answers(control) for d in asked), 10.0)
        answers = self._answers(control)
        busy = [d for d in asked if answers.get(d) == "busy"]
        pending = [d for d in asked if d not in answers]
        notes = []
        if busy:
            notes.append(f"{', '.join(busy)} refused (_OST 130: device busy)")
        if pending:
            notes.append(f"{', '.join(pending)} still being ejected")
        return "; ".join(notes)

    def pin_target(self, control: MachineControl) -> str | None:
        dimms = sorted(control.machine.hotplug.plugged(), key=lambda d: d.slot)
        return dimms[0].id if dimms else None

    def rogue_write(self, control: MachineControl) -> Measured:
        machine = control.machine
        present = {d.addr for d in machine.hotplug.plugged()}
        layout = machine.layout
        gone = [d.addr for d in layout.dimms if d.addr not in present]
        if not gone:
            return Measured("nothing was given back to write to", {"cheated": None})
        out = control.guest(RogueWrite(gone[0], None))
        blocked = bool(out.values["blocked"])
        return Measured("no: the DIMM is gone, nothing is there" if blocked else
                        "yes: the write went through", {"cheated": not blocked})

    def boot_scanned(self, control: MachineControl) -> bool:
        """ACPI's scan adds the DIMMs present at boot, just after the guest said "booted"."""
        if has_option(control.machine.config.cmdline, self.driver_option):
            return True
        view = control.snapshot().guest
        present = {d.slot for d in control.machine.hotplug.plugged()}
        return view is not None and present <= {d.slot for d in view.dimms}

    def guest_sees(self, control: MachineControl) -> int:
        snap = control.snapshot()
        view = snap.guest
        added = sum(d.size for d in view.dimms if d.state == "added") if view else 0
        return snap.boot_ram_size + added

    def migrate(self, control: MachineControl) -> tuple[Measured, Machine | None]:
        bare = replace(self.config(), dimms=[], cmdline=control.machine.config.cmdline)
        try:
            control.migrate(bare)
            first = "(a destination without DIMMs was accepted)"
        except ControlError as err:
            first = err.message
        needs = [f"-object memory-backend-ram,id={d.memdev},size={d.size >> 20}M "
                 f"-device pc-dimm,id={d.id},memdev={d.memdev}"
                 for d in sorted(control.machine.hotplug.plugged(), key=lambda d: d.slot)]
        dest = control.migrate(self.destination_config(control))
        return Measured(f"the DIMMs present now on the destination's command line "
                        f"({len(needs)}); without them: {first}",
                        {"needs": needs, "without": first}), dest

    def destination_config(self, control: MachineControl) -> MachineConfig:
        dimms = [DimmConfig(d.id, d.memdev, d.size, d.node, d.slot, d.addr)
                 for d in sorted(control.machine.hotplug.plugged(), key=lambda d: d.slot)]
        return replace(self.config(), dimms=dimms, cmdline=control.machine.config.cmdline)


# ------------------------------------------------------------------------------ models

class _BalloonModel(Mechanism):
    kind = "model"
    unit_text = "4 KiB (a page)"

    def assigned(self, control: MachineControl) -> int:
        """What the host backs for the guest now (Xen: its physmap; Hyper-V: all RAM and
        hot-added memory but what was given back)."""
        return int(control.models.stats(residency=False)["populated"])

    def request_back(self, control: MachineControl, amount: int) -> None:
        target = control.models.stats(residency=False)["target"]
        control.models.set_target(max(4096, int(target) - amount))

    def settle(self, control: MachineControl) -> str:
        def idle() -> bool:
            view = control.snapshot().guest
            b = view.pv_balloon if view else None
            return b is not None and b.state in ("idle", "short", "disabled")
        time.sleep(0.05)
        wait(idle, SETTLE_S)
        view = control.snapshot().guest
        b = view.pv_balloon if view else None
        return "the balloon could not inflate enough" if b and b.state == "short" else ""

    def rogue_write(self, control: MachineControl) -> Measured:
        addr = control.models.given_page()
        if addr is None:
            return Measured("nothing was given back to write to", {"cheated": None})
        before = control.models.stats()["cheated"]
        try:
            out = control.guest(RogueWrite(addr, None))
        except ControlError as err:
            if control.machine.runstate != "running":
                return Measured("no: writing there killed the domain",
                                {"cheated": False, "killed": True, "error": err.message})
            raise
        after = control.models.stats()["cheated"]
        cheated = bool(out.values["status"] == 0 and after > before)
        return Measured("yes: the host backs the page again" if cheated else
                        "no: the write did not reach host memory", {"cheated": cheated})

    def guest_sees(self, control: MachineControl) -> int:
        view = control.snapshot().guest
        b = view.pv_balloon if view else None
        return int(b.ram_pages * 4096) if b else control.machine.boot_ram.size

    def host_wants(self, control: MachineControl) -> int:
        return int(control.models.stats(residency=False)["target"])

    def migrate(self, control: MachineControl) -> tuple[Measured, Machine | None]:
        return Measured("not modelled: Xen and Hyper-V migrate their own way",
                        {"needs": None}), None


class Xen(_BalloonModel):
    name = "xen"
    title = "Xen balloon (behaviour model)"
    driver_option = "modprobe.blacklist=xen_balloon"

    def config(self) -> MachineConfig:
        s = self.size
        return MachineConfig(boot_ram=s.boot + s.extra, maxmem=s.boot + s.extra,
                             behaviour_model="xen", cmdline=s.cmdline)


class HyperV(_BalloonModel):
    name = "hyperv"
    title = "Hyper-V balloon (behaviour model)"
    driver_option = "modprobe.blacklist=hv_balloon"

    def config(self) -> MachineConfig:
        s = self.size
        return MachineConfig(boot_ram=s.boot, maxmem=s.boot + 2 * s.extra, slots=16,
                             behaviour_model="hyperv", cmdline=s.cmdline)

    def prepare(self, control: MachineControl) -> None:
        """Hot-add the extra memory (Hyper-V adds memory in 128 MiB units)."""
        control.models.set_target(self.size.boot + self.size.extra)


# ------------------------------------------------------------------------------ registry

def mechanisms() -> dict[str, type[Mechanism]]:
    """Every mechanism the lab compares, by name."""
    from control.mechanism_balloon import VirtioBalloon  # it builds on this module

    return {"virtio-mem": VirtioMem, "dimm": Dimms, "virtio-balloon": VirtioBalloon,
            "xen": Xen, "hyperv": HyperV}


def make(name: str, size: LabSize) -> Mechanism:
    try:
        return mechanisms()[name](size)
    except KeyError:
        raise ControlError(f"unknown mechanism '{name}' (have: "
                           f"{', '.join(mechanisms())})", ErrorKind.INVALID) from None
