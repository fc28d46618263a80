"""Suspend to RAM and wake-up (S3): the guest suspends itself, the host wakes it.

The guest's ``suspend`` workload is ``echo mem > /sys/power/state``: its drivers freeze, then
it calls PSCI SYSTEM_SUSPEND and the machine's run state becomes ``suspended`` (QMP
``SUSPEND``). ``system_wakeup`` (QMP ``WAKEUP``) lets it run on; the write to
/sys/power/state then returns. Linux's virtio_mem refuses to freeze while memory is plugged
unless VIRTIO_MEM_F_PERSISTENT_SUSPEND was negotiated (virtio 1.4 drafts, Linux 6.10+; the
device offers it with ``-machine ...`` / ``persistent-suspend``), and QEMU's wake-up reset keeps
the plugged blocks (``RESET_TYPE_WAKEUP``, QEMU 9.2+).
"""

from __future__ import annotations

import time

from control.errors import ENGINE_ERRORS, ControlError, ErrorKind
from control.guest_ops import check_guest_can_act
from emulator.machine import Machine
from emulator.states import RunState
from emulator.workload import errno_name

REFUSED = "virtio_mem: suspending with plugged memory is not supported"


class SuspendControl:
    """S3 for one machine; see the module docstring."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def suspend(self, timeout: float = 10.0) -> None:
        """Have the guest suspend itself; returns once the machine is ``suspended``.
        ``ControlError`` (REFUSED) when a driver refuses, with Linux's reason."""
        machine = self.machine
        check_guest_can_act(machine)
        try:
            future = machine.submit_command("suspend")
        except ENGINE_ERRORS as err:
            raise ControlError.of(err) from None
        deadline = time.monotonic() + timeout
        while machine.runstate is not RunState.SUSPENDED:
            if future.done():
                result = future.result()
                if result.status:
                    raise ControlError(f"the guest refused to suspend: {REFUSED} "
                                       f"({errno_name(result.status)})", ErrorKind.REFUSED)
                return  # suspended and already woken up again
            if time.monotonic() >= deadline:
                raise ControlError("the guest did not suspend", ErrorKind.FAILED)
            machine.wait_until(lambda m: m.runstate is RunState.SUSPENDED or future.done(),
                               timeout=0.2)

    def wakeup(self) -> None:
        """QEMU ``system_wakeup`` (its error text when the guest is not suspended)."""
        try:
            self.machine.system_wakeup()
        except ENGINE_ERRORS as err:
            raise ControlError.of(err) from None

    @property
    def suspended(self) -> bool:
        return self.machine.runstate is RunState.SUSPENDED
