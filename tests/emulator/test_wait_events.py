"""The guest's WAIT call (emulator/paravirt.py): an interrupt the host raises while a WAIT is
returning must reach the guest, at this WAIT or the next, never be cleared unseen."""

from __future__ import annotations

import threading
from typing import Any

from unicorn import arm64_const as arm

from emulator import abi
from emulator.events import EventBus
from emulator.paravirt import Paravirt


class Registers:
    """The one thing finish_wait does to the vCPU: write x0..x5."""

    def __init__(self) -> None:
        self.x: dict[int, int] = {}

    def reg_write(self, reg: int, value: int) -> None:
        self.x[reg - arm.UC_ARM64_REG_X0] = value


def test_an_interrupt_raised_while_a_wait_returns_waits_for_the_next_wait() -> None:
    pv = Paravirt(EventBus(), [], hooks=None, wake=lambda: None)  # type: ignore[arg-type]
    pv.waiting = True
    pv.raise_event(abi.EV_VIRTIO)
    # the host thread posts the GED interrupt exactly while the vCPU thread decides what this
    # WAIT returns (as device_del right after a command's DONE, on a loaded machine)
    ged = threading.Thread(target=pv.raise_event, args=(abi.EV_ACPI,))
    decide = pv.deliverable

    def racing() -> int:
        events = decide()
        if ged.ident is None:
            ged.start()
            ged.join(0.2)  # it runs now, or it waits for the WAIT's lock
        return events

    pv.deliverable = racing  # type: ignore[method-assign]
    regs: Any = Registers()
    assert pv.finish_wait(regs)
    ged.join()
    pv.deliverable = decide  # type: ignore[method-assign]
    assert regs.x[0] == abi.EV_VIRTIO
    assert pv.deliverable() == abi.EV_ACPI  # kept: the next WAIT returns it

    pv.waiting = True
    assert pv.finish_wait(regs) and regs.x[0] == abi.EV_ACPI
    assert pv.deliverable() == 0
