"""The paravirtual call layer: what the guest asks the host through ``smc #0``.

The guest idles in ``WAIT``; the host wakes it with events (a virtio interrupt, a workload
command, a timeout) and the guest answers commands with ``DONE`` and reports itself with
``STATUS`` (booted, driver state per device, faults, panic). PSCI ``SYSTEM_RESET`` and
``SYSTEM_OFF`` end up here too. docs/abi.md is the contract; ``emulator/abi.py`` mirrors it.

This module keeps the state those calls share (pending events, the command queue, what the
guest reported) and nothing else: the vCPU runner decides *when* the guest runs, the machine
what a reset or a shutdown does (the ``MachineHooks`` it is given).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from device.errors import VmemError
from emulator import abi
from emulator.events import EventBus, GuestCommandDone, GuestStatus
from emulator.states import DriverState, RunState

U64 = 0xFFFF_FFFF_FFFF_FFFF
MAX_WAIT_SLICE_S = 86_400.0  # the longest the vCPU thread sleeps in one wait

COMMANDS = {
    "alloc": abi.CMD_ALLOC,
    "free": abi.CMD_FREE,
    "touch": abi.CMD_TOUCH,
    "verify": abi.CMD_VERIFY,
    "dump": abi.CMD_DUMP,
    "rogue-write": abi.CMD_ROGUE_WRITE,
    "read": abi.CMD_READ,
    "stats": abi.CMD_STATS,
    "reboot": abi.CMD_REBOOT,
    "poweroff": abi.CMD_POWEROFF,
    "online": abi.CMD_ONLINE,
    "balloon-rogue": abi.CMD_BALLOON_ROGUE,
    "grow": abi.CMD_GROW,
    "suspend": abi.CMD_SUSPEND,
}
_COMMAND_NAMES = {v: k for k, v in COMMANDS.items()}


class MachineError(VmemError):
    """A request the machine cannot carry out in its current state."""


@dataclass(frozen=True)
class GuestResult:
    """What a workload command returned from inside the guest."""

    command: str
    status: int  # 0 or -errno
    values: tuple[int, int]

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass
class _PendingCommand:
    seq: int
    code: int
    args: tuple[int, int, int]
    future: Future[GuestResult]


class MachineHooks(Protocol):
    """What the paravirtual layer asks of the machine it belongs to."""

    def set_runstate(self, state: RunState, reason: str = "") -> None: ...

    def request_reset(self, guest: bool, reason: str) -> None: ...


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


class Paravirt:
    """SMC calls, the WAIT/command state and the guest's own reports; see the module doc."""

    def __init__(self, bus: EventBus, device_ids: Sequence[str], hooks: MachineHooks,
                 wake: Callable[[], None]) -> None:
        self._bus = bus
        self._device_ids = list(device_ids)
        self._hooks = hooks
        self._wake = wake
        self._lock = threading.Lock()
        self._commands: deque[_PendingCommand] = deque()
        self._in_flight: dict[int, _PendingCommand] = {}
        self._next_cmd_seq = 1
        self.guest_states: dict[str, DriverState] = {}
        self.guest_faults = 0
        #: asked at each driver step the guest reports: True holds the guest a moment (the
        #: teaching pace); the default never holds it
        self.driver_step: Callable[[str | None, DriverState | None], bool] = (
            lambda _device, _state: False)
        #: more SMC function ids: fid -> handler(uc, x) returning True when the vCPU must stop
        self.calls: dict[int, Callable[[UcAArch64, list[int]], bool]] = {}
        self.boot()

    # ---------------------------------------------------------------- lifetime

    def boot(self) -> None:
        """A new boot: the guest knows nothing yet and reports nothing yet."""
        self._boot_ns = time.monotonic_ns()
        self.view_addr = 0
        self.balloon_view_addr = 0
        self.booted = False
        self.waiting = False
        self._wait_deadline: float | None = None
        self._pending_events = 0
        for name in self._device_ids:
            self.guest_states[name] = DriverState.ABSENT

    @property
    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self._boot_ns

    # ---------------------------------------------------------------- host → guest

    def raise_irq(self) -> None:
        """A virtio interrupt: the guest's WAIT returns ``EV_VIRTIO``."""
        self.raise_event(abi.EV_VIRTIO)

    def raise_event(self, bits: int) -> None:
        """Events for the guest's WAIT (``EV_VIRTIO``, ``EV_ACPI``: the GED interrupt, ...)."""
        with self._lock:
            self._pending_events |= bits
        self._wake()

    def submit(self, command: str, a0: int, a1: int, a2: int) -> Future[GuestResult]:
        """Queue a workload command; the guest takes it at its next WAIT."""
        if command not in COMMANDS:
            raise MachineError(f"unknown guest command '{command}'")
        future: Future[GuestResult] = Future()
        with self._lock:
            seq = self._next_cmd_seq
            self._next_cmd_seq += 1
            self._commands.append(
                _PendingCommand(seq, COMMANDS[command], (a0 & U64, a1 & U64, a2 & U64), future))
        self._wake()
        return future

    def fail_commands(self, why: str) -> None:
        """Every queued and running command fails with ``why`` (reboot, shutdown, close)."""
        with self._lock:
            pending = list(self._commands) + list(self._in_flight.values())
            self._commands.clear()
            self._in_flight.clear()
        for cmd in pending:
            if not cmd.future.done():
                cmd.future.set_exception(MachineError(why))

    def deliverable(self) -> int:
        """The events a WAIT would return right now (0: it keeps waiting)."""
        events = self._pending_events
        if self._commands:
            events |= abi.EV_COMMAND
        if self._wait_deadline is not None and time.monotonic() >= self._wait_deadline:
            events |= abi.EV_TIMEOUT
        return events

    def wait_timeout(self) -> float | None:
        """Seconds until a waiting guest's WAIT times out (None: no timeout, or not waiting).

        A guest may WAIT for up to 2^64 us, beyond what ``Condition.wait`` accepts: the
        answer is capped at ``MAX_WAIT_SLICE_S`` and the waiter looks again (the deadline
        itself is unchanged).
        """
        if self.waiting and self._wait_deadline is not None:
            return min(max(0.0, self._wait_deadline - time.monotonic()), MAX_WAIT_SLICE_S)
        return None

    def finish_wait(self, uc: UcAArch64) -> bool:
        """Return from the guest's WAIT call with what is pending (False: nothing is).

        What is returned and what is cleared are decided under one lock: an event the host
        raises meanwhile (a GED interrupt right after a command's DONE) waits for the next
        WAIT instead of being cleared unseen."""
        with self._lock:
            events = self.deliverable()
            if not events:
                return False
            regs = [events, 0, 0, 0, 0, 0]
            self._pending_events &= ~events
            if events & abi.EV_COMMAND:
                cmd = self._commands.popleft()
                self._in_flight[cmd.seq] = cmd
                regs[1:6] = [cmd.seq, cmd.code, *cmd.args]
        for i, value in enumerate(regs):
            uc.reg_write(arm.UC_ARM64_REG_X0 + i, value & U64)
        self.waiting = False
        self._wait_deadline = None
        return True

    # ---------------------------------------------------------------- guest → host

    def smc(self, uc: UcAArch64, fid: int, x: list[int]) -> bool:
        """Carry out one SMC call; True when the vCPU must stop (it waits, resets, is off)."""
        if fid == abi.VMEM_CALL_YIELD:
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
        elif fid == abi.VMEM_CALL_WAIT:
            self.waiting = True
            self._wait_deadline = time.monotonic() + x[1] / 1e6 if x[1] else None
            return not (self.deliverable() and self.finish_wait(uc))
        elif fid == abi.VMEM_CALL_DONE:
            self._command_done(x[1], _signed(x[2]), x[3], x[4])
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
        elif fid == abi.VMEM_CALL_STATUS:
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
            return self._guest_status(x[1], x[2], x[3], x[4])
        elif fid == abi.VMEM_CALL_TIME:
            uc.reg_write(arm.UC_ARM64_REG_X0, self.uptime_ns)
        elif fid == abi.PSCI_SYSTEM_RESET:
            self._hooks.request_reset(True, "guest-reset")
            return True
        elif fid == abi.PSCI_SYSTEM_OFF:
            self._hooks.set_runstate(RunState.SHUTDOWN, "guest-shutdown")
            return True
        elif fid == abi.PSCI_SYSTEM_SUSPEND:  # S3: the call returns 0 after system_wakeup
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
            self._hooks.set_runstate(RunState.SUSPENDED, "guest-suspend")
            return True
        elif fid in self.calls:
            return self.calls[fid](uc, x)
        else:
            uc.reg_write(arm.UC_ARM64_REG_X0, abi.SMCCC_NOT_SUPPORTED)
        return False

    def _command_done(self, seq: int, status: int, v0: int, v1: int) -> None:
        with self._lock:
            cmd = self._in_flight.pop(seq, None)
        name = _COMMAND_NAMES.get(cmd.code, "?") if cmd else "?"
        self._bus.publish(GuestCommandDone(seq, name, status, (v0, v1)))
        if cmd is not None and not cmd.future.done():
            cmd.future.set_result(GuestResult(name, status, (v0, v1)))

    def _guest_status(self, kind: int, a: int, b: int, c: int) -> bool:
        if kind == abi.STATUS_BOOTED:
            self.view_addr = a
            self.booted = True
            self._bus.publish(GuestStatus("booted", None, b))
        elif kind == abi.STATUS_DRIVER:
            name = self._device_ids[a] if 0 <= a < len(self._device_ids) else None
            state = DriverState.from_code(b)
            if name is not None and state is not None:
                self.guest_states[name] = state
            self._bus.publish(GuestStatus(state or f"unknown({b})", name, _signed(c)))
            return self.driver_step(name, state)
        elif kind == abi.STATUS_BALLOON:
            self.balloon_view_addr = a
        elif kind == abi.STATUS_FAULT:
            self.guest_faults += 1
            self._bus.publish(GuestStatus("fault", None, b))
        elif kind == abi.STATUS_PANIC:
            self._bus.publish(GuestStatus("panic", None, b))
            self._hooks.set_runstate(RunState.GUEST_PANICKED,
                                     f"ESR {a:#x} FAR {b:#x} ELR {c:#x}")
            return True
        return False

    # ---------------------------------------------------------------- migration

    def state(self) -> dict[str, Any]:
        """What a saved machine must carry of this layer (JSON-ready)."""
        deadline = self._wait_deadline if self.waiting else None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return {
            "waiting": self.waiting,
            "wait_remaining": remaining,
            "pending_events": self._pending_events,
            "view_addr": self.view_addr,
            "balloon_view_addr": self.balloon_view_addr,
            "guest_booted": self.booted,
            "guest_faults": self.guest_faults,
            "guest_states": {k: str(v) for k, v in self.guest_states.items()},
            "uptime_ns": self.uptime_ns,
            "next_cmd_seq": self._next_cmd_seq,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take over ``state()`` of a saved machine (already checked by the loader)."""
        self.waiting = bool(state["waiting"])
        remaining = state["wait_remaining"]
        self._wait_deadline = None if remaining is None else time.monotonic() + remaining
        self._pending_events = int(state["pending_events"])
        self.view_addr = int(state["view_addr"])
        self.balloon_view_addr = int(state.get("balloon_view_addr", 0))
        self.booted = bool(state["guest_booted"])
        self.guest_faults = int(state["guest_faults"])
        for name, value in state["guest_states"].items():
            if name in self.guest_states:
                self.guest_states[name] = DriverState(value)
        self._boot_ns = time.monotonic_ns() - int(state["uptime_ns"])
        self._next_cmd_seq = int(state["next_cmd_seq"])
