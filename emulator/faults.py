"""Guest faults, contained: a refused access or a trapping instruction becomes an exception
the guest handles, a recorded violation, or -- for a guest faulting in its own handler -- a
panicked machine. Never a Python traceback.

Stage 2 refuses an access by returning False from the TLB fill (``Stage2.denied`` says which);
Unicorn then stops with a fault error. Instructions Unicorn hands to the host (UDEF, SVC, BRK,
HVC) arrive as interrupts the vCPU runner notes here. Either way the guest gets the synchronous
exception the CPU would have taken (``emulator.exceptions``) -- except for a store an x86
machine drops (``dynamic-memslots``, nothing mapped there: QEMU's ``unassigned_mem_write``
ignores it and x86 has no transaction-failed hook): the store completes without effect, so
the guest goes on at the next instruction. (vmemlab skips the instruction: a store that also
writes back its base register would lose that writeback; the guest's stores do not.)
"""

from __future__ import annotations

from collections.abc import Callable

from unicorn import (
    UC_ERR_EXCEPTION,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UcError,
)
from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from emulator import exceptions
from emulator.events import EventBus, Violation
from emulator.stage2 import Stage2
from emulator.states import RunState

MAX_NESTED_FAULTS = 4
_FAULTS = (UC_ERR_EXCEPTION, UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED)


class GuestFaults:
    """Turns engine errors into guest exceptions; see the module docstring."""

    def __init__(self, uc: UcAArch64, stage2: Stage2, bus: EventBus,
                 set_runstate: Callable[[RunState, str], None],
                 fatal: Callable[[str | None], str | None] = lambda window: None) -> None:
        self._uc = uc
        self._stage2 = stage2
        self._bus = bus
        self._set_runstate = set_runstate
        self._fatal = fatal  # a refused access that ends the machine (the Xen model's)
        self._pending: tuple[int, int] | None = None  # (interrupt number, pc)
        self._nested = 0

    def reset(self) -> None:
        """A new boot: no fault is pending."""
        self._pending = None
        self._nested = 0

    def clear(self) -> None:
        """Before a slice: forget the last refused access (it was handled)."""
        self._stage2.denied = None

    def trapped(self, intno: int, pc: int) -> None:
        """The guest executed an instruction Unicorn gives to the host (not SMC)."""
        self._pending = (intno, pc)

    def on_engine_error(self, err: UcError, pc: int) -> None:
        """Unicorn stopped with ``err`` at ``pc``: deliver the matching exception."""
        denied, self._stage2.denied = self._stage2.denied, None
        pending, self._pending = self._pending, None
        if err.errno in _FAULTS and denied is not None:
            killed = self._fatal(denied.device)
            reason = "memory the host never gave (the domain is killed)" if killed else None
            self._bus.publish(Violation(denied.device, denied.addr, pc, denied.access,
                                        reason or denied.reason))
            if killed is not None:
                self._set_runstate(RunState.SHUTDOWN, killed)
                return
            if denied.fault == "dropped":
                self._uc.reg_write(arm.UC_ARM64_REG_PC, pc + 4)
                return
            esr = exceptions.abort_syndrome(denied.access, denied.fault)
            self._inject(esr, denied.addr, pc)
        elif pending is not None:
            self._inject(exceptions.unknown_syndrome(), 0, pending[1])
        else:
            self._set_runstate(RunState.INTERNAL_ERROR, f"{err} at pc {pc:#x}")

    def _inject(self, esr: int, far: int, elr: int) -> None:
        """Deliver a synchronous exception; a guest faulting in its own handler is panicked."""
        nested = exceptions.in_vectors(self._uc, elr)
        self._nested = self._nested + 1 if nested else 0
        if (self._nested >= MAX_NESTED_FAULTS
                or not exceptions.enter_sync_exception(self._uc, esr, far, elr)):
            self._set_runstate(RunState.GUEST_PANICKED,
                               f"unhandled fault at {elr:#x} (ESR {esr:#x})")
