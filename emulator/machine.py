"""The emulated machine: one AArch64 vCPU on Unicorn, boot RAM, virtio-mem devices.

A ``Machine`` ties four parts together, each in its own module:

* ``emulator.board`` -- the hardware: engine, memory map, devices, firmware (boot info);
* ``emulator.vcpu`` -- the worker thread that runs the guest and stops only at safe points;
* ``emulator.paravirt`` -- the guest's SMC calls: WAIT, workload commands, status reports;
* ``emulator.faults`` -- refused accesses and traps turned into guest exceptions.

The machine itself owns the run state (QEMU's names, ``RunState``) and what a system reset
does. Host register writes and snapshots need no stop at all: they take the device lock.

Public surface (all thread-safe): ``start``, ``pause``, ``resume``, ``close``,
``set_requested_size``, ``system_reset``, ``submit_command``/``guest_command``, ``step``,
``set_speed``, ``snapshot``, ``save``, ``load_state``, ``read_memory``, ``wait_until``,
``call``, and ``bus`` for events.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from device.errors import DeviceNotFound
from device.events import Event
from device.virtio_balloon import VirtioBalloonDevice
from device.virtio_mem import VirtioMemDevice
from device.virtio_mmio import VirtioMmioTransport
from emulator import abi
from emulator.backing import HostMemory
from emulator.board import Board
from emulator.config import MachineConfig, MachineLayout
from emulator.console import GuestConsole
from emulator.dimm_hotplug import DimmHotplug
from emulator.events import EventBus, Reset, RunStateChange, UnpluggedWrite, ZeroPageRead
from emulator.faults import GuestFaults
from emulator.guest_memory import CpuView, DmaMemory
from emulator.image import load_guest_image
from emulator.pacing import RequestPacer
from emulator.paravirt import GuestResult, MachineError, Paravirt
from emulator.states import DriverState, RunState
from emulator.vcpu import MIN_SPEED, VcpuRunner

if TYPE_CHECKING:
    from emulator.snapshot import MachineSnapshot

T = TypeVar("T")

__all__ = ["GuestResult", "Machine", "MachineError"]


class Machine:
    """One emulated machine; see the module docstring."""

    def __init__(self, config: MachineConfig, *, image: bytes | None = None,
                 incoming: bool = False) -> None:
        self.config = config
        self.bus = EventBus()
        self._runstate = RunState.INMIGRATE if incoming else RunState.PRELAUNCH
        self._reset_request: tuple[bool, str] | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        self.last_migration_bytes = 0
        self._console = GuestConsole(self.bus)
        self.board = Board(config, image if image is not None else load_guest_image(),
                           emit=self._emit, raise_irq=lambda: self.paravirt.raise_irq(),
                           uart_write=self._console.write,
                           raise_event=lambda bits: self.paravirt.raise_event(bits))
        slot_ids = list(self.board.devices)  # the guest reports drivers by virtio-mmio slot
        if self.board.balloon is not None:
            slot_ids.append(self.board.balloon.id)
        self.paravirt = Paravirt(self.bus, slot_ids, self, wake=lambda: self.vcpu.notify())
        self.faults = GuestFaults(self.board.uc, self.board.stage2, self.bus,
                                  self.set_runstate, fatal=self.board.fatal_access)
        if self.board.pv_balloon is not None:
            self.paravirt.calls[abi.VMEM_CALL_PVBALLOON] = self.board.pv_balloon.call
        #: the teaching pace (vmemlab's own control): held requests, driver-step moments
        self.pacer = RequestPacer(emit=self._emit, answer=self.board.answer_queue,
                                  pause=lambda why: self.set_runstate(RunState.PAUSED, why))
        self.board.notify_hook = self.pacer.take_notify
        self.paravirt.driver_step = (
            lambda dev, state: dev in self.board.devices and self.pacer.driver_step(state))
        self.vcpu = VcpuRunner(self.board.uc, self.paravirt, self.faults, self.pacer,
                               running=lambda: self._runstate is RunState.RUNNING,
                               before_call=self._publish_zero_reads,
                               after_slice=self._after_slice, on_crash=self._on_crash)
        self._load_guest()

    # ---------------------------------------------------------------- views of the parts

    @property
    def layout(self) -> MachineLayout:
        return self.board.layout

    @property
    def image(self) -> bytes:
        return self.board.image

    @property
    def devices(self) -> dict[str, VirtioMemDevice]:
        return self.board.devices

    @property
    def transports(self) -> list[VirtioMmioTransport]:
        return self.board.transports

    @property
    def balloon(self) -> VirtioBalloonDevice | None:
        """The virtio-balloon device, if the machine has one."""
        return self.board.balloon

    @property
    def balloon_view_addr(self) -> int:
        """Where the guest's balloon driver exports its view (0: it has not bound yet)."""
        return self.paravirt.balloon_view_addr

    @property
    def regions(self) -> dict[str, HostMemory]:
        return self.board.regions

    @property
    def hotplug(self) -> DimmHotplug:
        """Memory backends, pc-dimms and ACPI memory hotplug (``emulator.dimm_hotplug``)."""
        return self.board.hotplug

    @property
    def boot_ram(self) -> HostMemory:
        return self.board.boot_ram

    @property
    def dma(self) -> DmaMemory:
        return self.board.dma

    @property
    def cpu_view(self) -> CpuView:
        return self.board.cpu_view

    @property
    def device_lock(self) -> threading.RLock:
        return self.board.device_lock

    @property
    def console(self) -> deque[str]:
        """The guest's recent console lines (oldest first)."""
        return self._console.lines

    @property
    def guest_states(self) -> dict[str, DriverState]:
        """What the guest's driver last reported per device (``absent`` before it did)."""
        return self.paravirt.guest_states

    @property
    def guest_booted(self) -> bool:
        return self.paravirt.booted

    @property
    def guest_faults(self) -> int:
        return self.paravirt.guest_faults

    @property
    def view_addr(self) -> int:
        return self.paravirt.view_addr

    @property
    def uptime_ns(self) -> int:
        return self.paravirt.uptime_ns

    @property
    def runstate(self) -> RunState:
        return self._runstate

    @property
    def speed(self) -> float:
        return self.vcpu.speed

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- lifetime

    def start(self, *, paused: bool = False) -> None:
        """Start the vCPU thread and run the guest (a no-op if already started).

        ``paused=True`` starts the thread but leaves the guest where it is ("prelaunch", or
        "inmigrate" for an incoming machine), like QEMU's ``-S``: ``resume()`` runs it.
        """
        self._check_open()
        self.vcpu.start()
        if self._runstate is RunState.PRELAUNCH and not paused:
            self.call(lambda: self.set_runstate(RunState.RUNNING))

    def close(self) -> None:
        """Stop the vCPU thread and release host memory (idempotent, from any thread)."""
        self.vcpu.stop()
        self.paravirt.fail_commands("machine closed")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.board.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MachineError("the machine is closed")

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the vCPU thread with the machine quiescent (for snapshots, saves)."""
        self._check_open()
        return self.vcpu.call(fn, timeout)

    # ---------------------------------------------------------------- run state

    def set_runstate(self, state: RunState, reason: str = "") -> None:
        """Enter ``state`` (QEMU's run state): publish it, wake the vCPU, fail what it ends.

        Called by the machine's own parts (paravirtual calls, faults, migration); front-ends
        use ``pause``/``resume``/``system_reset``.
        """
        state = RunState(state)
        if state != self._runstate:
            self._runstate = state
            self.bus.publish(RunStateChange(state, reason))
            self.vcpu.notify()
        if state.needs_reset:
            self.paravirt.fail_commands(f"guest is {state}")

    def request_reset(self, guest: bool, reason: str) -> None:
        """A reset asked for from inside a slice (PSCI): done when the slice ends."""
        self._reset_request = (guest, reason)

    def _after_slice(self) -> None:
        self._publish_zero_reads()
        self.board.hotplug.after_slice()
        if self._reset_request is not None:
            guest, reason = self._reset_request
            self._reset_request = None
            self._do_system_reset(guest, reason)

    def _on_crash(self, exc: BaseException) -> None:
        self.set_runstate(RunState.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _emit(self, event: Event) -> None:
        self.bus.publish(event)

    def _publish_zero_reads(self) -> None:
        """What the stage-2 fills recorded since the last slice: reads of empty unplugged
        memory and first writes to unplugged memory."""
        for dev, first, count in self.board.stage2.take_zero_reads():
            outside = (first + count) * dev.block_size > dev.usable_region_size
            self.bus.publish(ZeroPageRead(dev.id, first, count, outside))
            self.board.populate_huge_pages(dev.id, first, count)
        for dev, first, count in self.board.stage2.take_unplugged_writes():
            self.bus.publish(UnpluggedWrite(dev.id, first, count))

    def _load_guest(self) -> None:
        self.paravirt.boot()
        self.faults.reset()
        self.board.load_guest(self.config.cmdline)

    def _do_system_reset(self, guest: bool, reason: str, cmdline: str | None = None) -> None:
        self.pacer.reset()
        self.board.reset_devices()
        if cmdline is not None:
            self.config = self.config.with_cmdline(cmdline)
        self.paravirt.fail_commands("guest rebooted")
        self.bus.publish(Reset(guest, reason, self.config.cmdline))
        self._load_guest()
        # QEMU's main loop: a machine that was not running waits in "prelaunch" for "cont"
        if self._runstate not in (RunState.RUNNING, RunState.INMIGRATE):
            self.set_runstate(RunState.PRELAUNCH, "reset")
        elif self._runstate is RunState.RUNNING and self.pacer.pause_after_reset:
            # the teaching pace's "pause after reset": everything unplugged, until "cont"
            self.set_runstate(RunState.PAUSED, "pause-after-reset")

    # ---------------------------------------------------------------- public control

    def pause(self) -> None:
        """QEMU ``stop``: the vCPU stops between instructions; devices keep their state."""
        self.call(lambda: self.set_runstate(RunState.PAUSED, "stop")
                  if self._runstate is RunState.RUNNING else None)

    def resume(self) -> None:
        """QEMU ``cont``."""
        def go() -> None:
            if self._runstate.resumable:
                self.set_runstate(RunState.RUNNING, "cont")
        if not self.vcpu.started:
            self.start()
        self.call(go)

    def system_wakeup(self) -> None:
        """QEMU ``system_wakeup``: a guest in S3 (``suspended``) runs on after its PSCI
        SYSTEM_SUSPEND call. QEMU's wake-up reset (``RESET_TYPE_WAKEUP``, QEMU 9.2+) leaves
        virtio-mem's plugged blocks alone; the guest's drivers re-initialise their devices
        themselves (Linux's restore callbacks), so no device is touched here."""
        def wake() -> None:
            if self._runstate is not RunState.SUSPENDED:
                raise MachineError("Unable to wake up: guest is not in suspended state")
            self.set_runstate(RunState.RUNNING, "wakeup")
        self.call(wake)

    def set_speed(self, speed: float) -> None:
        """Run the guest at ``speed`` (0 < speed <= 1) of full speed, e.g. 0.01 to watch it."""
        if not MIN_SPEED <= speed <= 1.0:
            raise MachineError(f"speed must be between {MIN_SPEED} and 1")
        self.vcpu.set_speed(speed)

    def set_pace(self, pace_ms: int | None = None, *,
                 pause_after_reset: bool | None = None) -> None:
        """The teaching pace (``emulator.pacing``): hold each virtio-mem request ``pace_ms``
        in flight (0: full speed); ``pause_after_reset`` stops after each reset."""
        try:
            self.pacer.configure(pace_ms=pace_ms, pause_after_reset=pause_after_reset)
        except ValueError as err:
            raise MachineError(str(err)) from None
        self.vcpu.notify()

    def step_request(self) -> None:
        """Run until the next virtio-mem request is answered, then pause."""
        def go() -> None:
            if not (self._runstate.resumable or self._runstate is RunState.RUNNING):
                raise MachineError(f"the guest cannot run (it is {self._runstate})")
            if self._runstate.needs_reset:
                raise MachineError(f"guest is {self._runstate}")
            self.pacer.step()
            self.set_runstate(RunState.RUNNING, "step-request")
        if not self.vcpu.started:
            self.start(paused=True)
        self.call(go)

    def step(self, instructions: int = 1) -> int:
        """Execute ``instructions`` guest instructions while paused; returns the new PC."""
        if instructions < 1:
            raise MachineError("step needs at least one instruction")

        def run() -> int:
            if self._runstate is not RunState.PAUSED:
                raise MachineError(f"step needs a paused machine (it is {self._runstate})")
            return self.vcpu.step(instructions)

        return self.call(run)

    def device(self, dev_id: str) -> VirtioMemDevice:
        try:
            return self.devices[dev_id]
        except KeyError:
            raise DeviceNotFound(dev_id) from None

    def set_requested_size(self, dev_id: str, size: int) -> None:
        """``qom-set ID requested-size SIZE``; raises ``ConfigError`` with QEMU's text.

        Like a host writing a device register: done under the device lock on the caller's
        thread, the guest learns of it through the config-change interrupt, as it would.
        """
        device = self.device(dev_id)
        self._check_open()
        with self.device_lock:
            device.set_requested_size(size)

    def set_balloon_target(self, target: int) -> None:
        """QEMU's ``balloon``: the guest should have ``target`` bytes (``ConfigError`` with
        QEMU's text for a bad one). Like any host register write: under the device lock,
        the guest learns of it through the config-change interrupt."""
        balloon = self._balloon()
        with self.device_lock:
            balloon.set_target(target)

    def set_balloon_poll_interval(self, seconds: int) -> None:
        """``qom-set ID guest-stats-polling-interval N`` (QEMU's checks and texts)."""
        balloon = self._balloon()
        with self.device_lock:
            balloon.set_poll_interval(seconds)

    def _balloon(self) -> VirtioBalloonDevice:
        self._check_open()
        if self.board.balloon is None:
            raise MachineError("No balloon device has been activated")
        return self.board.balloon

    def system_reset(self, *, cmdline: str | None = None,
                     reason: str = "host-qmp-system-reset") -> None:
        """QEMU ``system_reset``: devices unplug everything, the guest boots again.

        ``cmdline`` replaces the guest's boot options for this and later boots (e.g.
        ``modprobe.blacklist=virtio_mem`` for a guest without the driver).
        """
        self.call(lambda: self._do_system_reset(False, reason, cmdline))

    def submit_command(self, command: str, a0: int = 0, a1: int = 0, a2: int = 0
                       ) -> Future[GuestResult]:
        """Queue a workload command for the guest; the future resolves when it is done."""
        if self._runstate.needs_reset:
            raise MachineError(f"guest is {self._runstate}")
        return self.paravirt.submit(command, a0, a1, a2)

    def guest_command(self, command: str, a0: int = 0, a1: int = 0, a2: int = 0,
                      timeout: float = 60.0) -> GuestResult:
        """Run a workload command inside the guest and wait for its result."""
        return self.submit_command(command, a0, a1, a2).result(timeout)

    def read_memory(self, gpa: int, size: int) -> bytes:
        """Guest-physical memory as the guest CPU would read it (zeros for unplugged blocks)."""
        data = self.call(lambda: self.cpu_view.read(gpa, size))
        self.board.host_read(gpa, size)
        return data

    # ---------------------------------------------------------------- state

    def save(self, stream: BinaryIO) -> None:
        """Write the whole machine to ``stream`` (``migrate "exec:cat > FILE"``)."""
        from emulator.migration import save_machine

        save_machine(self, stream)

    def load_state(self, stream: BinaryIO) -> None:
        """Load a saved machine into this freshly built one (``-incoming``)."""
        from emulator.migration import load_machine

        load_machine(self, stream)

    def state(self) -> dict[str, Any]:
        """The machine's own part of a saved machine: guest command line, paravirtual state."""
        return {"cmdline": self.config.cmdline, **self.paravirt.state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Take over ``state()`` of a saved machine (checked by the migration loader)."""
        self.config = self.config.with_cmdline(state["cmdline"])
        self.paravirt.restore(state)

    def snapshot(self, *, residency: bool = False) -> MachineSnapshot:
        """The current state of everything a user can see (``emulator.snapshot``).

        Runs on the caller's thread and does not stop the guest: a room full of pages polling
        their machines must not slow the guests down.
        """
        from emulator.snapshot import take_snapshot

        self._check_open()
        return take_snapshot(self, residency=residency)

    def wait_until(self, predicate: Callable[[Machine], bool], timeout: float = 30.0,
                   poll: float = 0.005) -> bool:
        """Wait until ``predicate(machine)`` holds; re-checked on every event and every ``poll``."""
        deadline = time.monotonic() + timeout
        while True:
            seq = self.bus.last_seq
            if predicate(self):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.bus.wait(seq, min(left, poll * 20))
