"""The comparison lab's adapters (control/mechanisms.py) on real machines: what they measure
must be what the guest has, however slowly the guest gets there."""

from __future__ import annotations

import time

from control import control_for
from control.mechanisms import Dimms, LabSize
from emulator.config import MiB
from emulator.events import GuestStatus, Record
from tests.conftest import MachineFactory

SMALL = LabSize(boot=256 * MiB, extra=256 * MiB, dimm=128 * MiB)


def hold_after_booted(record: Record) -> None:
    """A loaded server: the vCPU thread stalls right after the guest says "booted" and before
    its drivers probe (the publisher runs subscribers on its own thread)."""
    if isinstance(record.event, GuestStatus) and record.event.status == "booted":
        time.sleep(0.5)


def test_dimms_seen_after_reboot_are_counted_after_acpi_scan(
        make_machine: MachineFactory) -> None:
    mech = Dimms(SMALL)
    machine = make_machine(mech.config())
    control = control_for(machine)
    assert mech.wait_booted(control)
    assert mech.guest_sees(control) == 256 * MiB + 256 * MiB  # both DIMMs, added at boot
    machine.bus.subscribe(hold_after_booted)

    seen = mech.reboot(control, driver=True)
    assert seen.text == "sees 512 MiB" and seen.ok

    without = mech.reboot(control, driver=False)  # acpi_no_memhotplug: nothing to wait for
    assert without.values["seen"] == 256 * MiB
    assert without.text.startswith("sees 256 MiB; the workload used")
