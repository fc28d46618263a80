"""``MachineControl``: the typed operations every front-end uses on one machine.

HMP, QMP, the web page and the scenario player only *translate*: text, JSON, socket events
and YAML steps become calls here, and ``ControlError`` (a message plus an ``ErrorKind``)
becomes QEMU's error classes, HTTP statuses or a failed step. A new device or command is
added here once.

``control_for(machine)`` gives the one instance of a machine, so every front-end shares its
``SettleWatch``.
"""

from __future__ import annotations

import io
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from control.autoscaler import AutoscaleControl
from control.balloon import BalloonControl
from control.behaviour_models import BehaviourModelControl
from control.boot_options import driver_cmdline
from control.dimm_ops import DimmControl
from control.errors import ENGINE_ERRORS, ControlError, ErrorKind
from control.guest_ops import Alloc, GuestOp, GuestReboot, Outcome, run_guest_op
from control.guest_requests import GuestRequestControl
from control.settle import SettleWatch, balloon_settled
from control.suspend import SuspendControl
from emulator.config import MachineConfig
from emulator.machine import Machine
from emulator.pacing import RequestHeld
from emulator.snapshot import MachineSnapshot
from emulator.states import RunState

T = TypeVar("T")

@dataclass(frozen=True)
class Pace:
    """The teaching pace of a machine (``MachineControl.pace``)."""

    pace_ms: int
    pause_after_reset: bool
    stepping: bool  # pauses after the next answered request
    held: tuple[RequestHeld, ...]  # requests in flight now, oldest first
    answered: int  # requests answered after being held, since the machine was made

    def to_dict(self) -> dict[str, object]:
        return {"pace_ms": self.pace_ms, "pause_after_reset": self.pause_after_reset,
                "stepping": self.stepping, "answered": self.answered,
                "held": [h.to_dict() for h in self.held]}


Admission = Callable[[int], None]
"""Asked before guest memory may grow, with the bytes the operation makes resident now (0: it
only lets memory grow later, as a larger requested size does). Refuses by raising
``ControlError`` (``ErrorKind.EXHAUSTED``). A server sets one per machine for its budget."""


def engine_call(fn: Callable[[], T]) -> T:
    """Run ``fn``; an error the engine raises on purpose becomes a ``ControlError``."""
    try:
        return fn()
    except ControlError:
        raise
    except ENGINE_ERRORS as err:
        raise ControlError.of(err) from None


class MachineControl:
    """Typed operations on one machine; see the module docstring."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.watch = SettleWatch(machine.bus)
        self.admission: Admission | None = None
        self.balloon = BalloonControl(machine, self._admit, self.watch.answered)
        """The balloon's operations (``control.balloon``)."""
        #: memory backends and pc-dimms (``object_add``, ``device_add pc-dimm``, ...)
        self.dimms = DimmControl(machine, self._admit)
        #: the Xen / Hyper-V behaviour models (``-machine x-behaviour-model=``)
        self.models = BehaviourModelControl(machine, self._admit, self.dimms)
        #: the experimental guest -> host request queue (docs/extensions.md)
        self.requests = GuestRequestControl(machine, self._admit)
        #: suspend to RAM (the guest's) and system_wakeup (the host's)
        self.power = SuspendControl(machine)
        #: the experimental host-side autoscaler (docs/extensions.md)
        self.autoscale = AutoscaleControl(machine, self.settled, self.resize)

    def _admit(self, growth: int) -> None:
        if self.admission is not None:
            self.admission(growth)

    # ---------------------------------------------------------------- sizes

    def resize(self, device: str, size: int) -> None:
        """``qom-set DEVICE requested-size SIZE``: QEMU's checks and texts."""
        current = self.machine.devices.get(device)
        if current is not None and size > current.requested_size:
            self._admit(0)
        engine_call(lambda: self.machine.set_requested_size(device, size))

    # ---------------------------------------------------------------- guest

    def guest(self, op: GuestOp, timeout: float = 60.0) -> Outcome:
        """Have the guest do ``op`` (alloc, free, dump, rogue write, ...)."""
        if isinstance(op, Alloc):
            self._admit(op.size)
        return run_guest_op(self.machine, op, timeout)

    # ---------------------------------------------------------------- power

    def reboot(self, *, driver: bool | None = None, by_guest: bool = False,
               timeout: float = 10.0, driver_name: str | None = None,
               balloon_driver: bool | None = None) -> str:
        """A reboot; returns the guest command line it boots with.

        ``by_guest``: the guest reboots itself (PSCI SYSTEM_RESET) and this waits for the
        reset; else the host resets the machine (QEMU ``system_reset``). ``driver``: boot
        with (True) or without (False) the driver ``driver_name`` (``virtio_mem``,
        ``acpi_memhotplug``, ``xen_balloon``, ...; None: the behaviour model's balloon on
        such a machine, acpi_memhotplug on one with DIMM slots and no virtio-mem device,
        else virtio_mem); ``balloon_driver``: the same for virtio_balloon; None keeps the
        command line.
        """
        machine = self.machine
        if by_guest:
            seq = machine.bus.last_seq
            self.guest(GuestReboot())
            if not machine.wait_until(
                    lambda m: any(r.event.kind == "reset" for r in m.bus.since(seq)), timeout):
                raise ControlError("the guest did not reboot", ErrorKind.FAILED)
            return machine.config.cmdline
        if driver_name is None:
            driver_name = {"xen": "xen_balloon", "hyperv": "hv_balloon"}.get(
                machine.config.behaviour_model,
                "acpi_memhotplug" if machine.config.slots and not machine.devices
                else "virtio_mem")
        cmdline = (None if driver is None
                   else driver_cmdline(machine.config.cmdline, driver, driver_name))
        if balloon_driver is not None:
            cmdline = driver_cmdline(cmdline or machine.config.cmdline, balloon_driver,
                                     "virtio_balloon")
        engine_call(lambda: machine.system_reset(cmdline=cmdline))
        return machine.config.cmdline

    def pause(self) -> None:
        engine_call(self.machine.pause)

    def resume(self) -> None:
        """QEMU ``cont``, with its refusals."""
        state = self.machine.runstate
        if state.needs_reset:
            raise ControlError("Resetting the Virtual Machine is required", ErrorKind.REFUSED)
        if state is RunState.INMIGRATE:
            raise ControlError("Migration is not finished yet", ErrorKind.BUSY)
        engine_call(self.machine.resume)

    def step(self, instructions: int = 1) -> int:
        """Single-step a paused guest; the new PC."""
        return engine_call(lambda: self.machine.step(instructions))

    def set_speed(self, factor: float) -> None:
        engine_call(lambda: self.machine.set_speed(factor))

    # ---------------------------------------------------------------- teaching pace

    def set_pace(self, pace_ms: int | None = None, *,
                 pause_after_reset: bool | None = None) -> Pace:
        """vmemlab's teaching pace (not QEMU's): hold each virtio-mem request ``pace_ms``
        in flight before the device answers, and the guest a moment at each driver step (0:
        full speed); ``pause_after_reset`` keeps the machine in the all-unplugged state
        after a reset until it is continued. None leaves a setting as it is."""
        engine_call(lambda: self.machine.set_pace(pace_ms, pause_after_reset=pause_after_reset))
        return self.pace()

    def pace(self) -> Pace:
        """The pace settings and the requests held in flight now."""
        pacer = self.machine.pacer
        return Pace(pacer.pace_ms, pacer.pause_after_reset, pacer.stepping,
                    tuple(pacer.held()), pacer.answered)

    def step_request(self) -> None:
        """Run until the next virtio-mem request is answered, then pause (the machine must
        be paused or running; without a driver sending requests it simply keeps running)."""
        if self.machine.runstate.needs_reset:
            raise ControlError("Resetting the Virtual Machine is required", ErrorKind.REFUSED)
        if self.machine.runstate is RunState.INMIGRATE:
            raise ControlError("Migration is not finished yet", ErrorKind.BUSY)
        engine_call(self.machine.step_request)

    # ---------------------------------------------------------------- state

    def snapshot(self, *, residency: bool = False) -> MachineSnapshot:
        return engine_call(lambda: self.machine.snapshot(residency=residency))

    def unsettled(self, snap: MachineSnapshot | None = None,
                  device: str | None = None) -> list[str]:
        """Devices whose driver has not finished reacting (empty: settled); the balloon
        counts as a device (``device`` may name it)."""
        snap = snap or self.snapshot()
        balloon = snap.balloon
        balloon_done = balloon is None or balloon_settled(
            balloon, answered=self.watch.answered(balloon.id, upto=snap.seq))
        if balloon is not None and device == balloon.id:
            return [] if balloon_done else [balloon.id]
        devices = [snap.device(device)] if device is not None else list(snap.devices)
        out = [d.id for d in devices if not self.watch.settled(d)]
        if device is None and not balloon_done and balloon is not None:
            out.append(balloon.id)
        return out

    def settled(self, device: str | None = None) -> bool:
        return not self.unsettled(device=device)

    def wait_settled(self, timeout: float = 30.0, device: str | None = None) -> bool:
        return self.machine.wait_until(lambda _m: self.settled(device), timeout)

    def save(self, stream: BinaryIO) -> int:
        """Save the machine (QEMU ``migrate``): bytes of RAM sent; it ends ``postmigrate``."""
        engine_call(lambda: self.machine.save(stream))
        return self.machine.last_migration_bytes

    def migrate(self, destination: MachineConfig | None = None) -> Machine:
        """Migrate to a new machine built from ``destination`` (default: the same config).

        The destination is started and returned; the source is left ``postmigrate`` for the
        caller to close. Mismatches fail with QEMU's messages and leave the source as it was.
        """
        stream = io.BytesIO()
        self.save(stream)
        dest = Machine(destination or self.machine.config, incoming=True)
        try:
            stream.seek(0)
            engine_call(lambda: dest.load_state(stream))
        except BaseException:
            dest.close()
            if self.machine.runstate is RunState.POSTMIGRATE:
                self.machine.resume()
            raise
        dest.start()
        return dest

    def close(self) -> None:
        """Close the machine and stop watching it."""
        self.autoscale.close()
        self.watch.close()
        self.machine.close()


_controls: weakref.WeakKeyDictionary[Machine, MachineControl] = weakref.WeakKeyDictionary()
_controls_lock = threading.Lock()


def control_for(machine: Machine) -> MachineControl:
    """The one ``MachineControl`` of ``machine`` (made on first use)."""
    with _controls_lock:
        control = _controls.get(machine)
        if control is None:
            control = MachineControl(machine)
            _controls[machine] = control
        return control


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True
